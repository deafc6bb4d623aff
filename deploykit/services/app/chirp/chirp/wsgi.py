"""gunicorn's entry point: `gunicorn chirp.wsgi:app`."""

from chirp.web import create_app

app = create_app()
