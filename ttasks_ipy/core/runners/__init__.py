"""Runners: what one attempt of a task does (bash, Python, a call, a prompt), wherever it runs."""
