"""chirp: the demo social app deploykit provisions (users, posts, follows, home timelines).

PostgreSQL (the primary, through HAProxy) is the source of truth; Redis (found through Sentinel) holds
each user's home timeline, filled by the fan-out worker. Only Debian bookworm's python3-flask,
python3-psycopg2 and python3-redis are used: the servers install nothing from PyPI.
"""

__version__ = "1.0"
