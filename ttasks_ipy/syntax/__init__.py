"""The user's words, without IPython: leading options, the ``{expr}``/``$name`` expander, ``%%bgraph`` cells,
and the place where a body plus options become a runner and a spec."""
