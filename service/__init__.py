"""SqueezerFaceNet face-verification service: HTTP around the ``faces`` pipeline (no torch).

``main`` (app, lifespan), ``config`` (settings), ``api/`` (routes, deps, problem mapping, middleware),
``schemas``, ``metrics``, ``gallery/``. Every face step (decode → detect → choose → align → embed →
decide) lives in ``faces``; ``resources`` builds its pipeline from the serving ``PreprocessSpec``.
"""
