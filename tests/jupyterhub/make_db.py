"""Makes a JupyterHub database at URL with the installed release's own ORM: the schema at that
release's head revision, three users, a group and an API token per user.

Usage: <venv>/bin/python make_db.py URL
"""
import sys

from jupyterhub import orm

url = sys.argv[1]
db = orm.new_session_factory(url)()
# API tokens belong to an OAuth client; the hub registers its own as "jupyterhub".
db.add(orm.OAuthClient(identifier="jupyterhub"))
users = [orm.User(name=name) for name in ("alice", "bob", "carol")]
for user in users:
    db.add(user)
db.commit()
group = orm.Group(name="researchers")
group.users = users[:2]
db.add(group)
db.commit()
for user in users:
    user.new_api_token(note="made by the hubgrade tests")
db.commit()
print(f"{len(users)} users, 1 group, {len(users)} API tokens")
