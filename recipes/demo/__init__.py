"""The demo application: users and their posts, with a service layer that commits.

Plain application code, written the way a FastAPI project writes it; it knows nothing about
tests. The chapters and the test suite exercise it.
"""
