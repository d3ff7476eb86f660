"""The demo application: users and their posts, with a service layer that commits.

Plain application code, written the way a FastAPI project writes it; it knows nothing about
tests. The chapters and the test suite exercise it:

- :mod:`recipes.demo.models`: users and posts, with the constraints the chapters test.
- :mod:`recipes.demo.service`: functions that commit and raise domain errors.
- :mod:`recipes.demo.signup`: a service with collaborators (hasher, credential store, mailer).
- :mod:`recipes.demo.app`: the same over HTTP, a FastAPI app (the ``http`` extra).
"""
