"""Our worker processes: started with ``Popen`` in sessions of their own, reused, replaced when killed."""
