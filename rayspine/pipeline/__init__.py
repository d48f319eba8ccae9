"""The streaming scoring graph (``rayspine run``): Ray Data over an archive, steps 1-3 and encoding.

``stages`` (thin Ray Data wrappers around the steps' functions), ``graph`` (the only module that
builds a Ray Data pipeline, and ``run_pipeline``).
"""
