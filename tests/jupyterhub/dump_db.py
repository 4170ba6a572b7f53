"""Opens a JupyterHub database the way the hub does at start-up (orm.new_session_factory, which
refuses a schema revision other than its own) and prints every table's columns and rows as
JSON, so two dumps compare schema and data.

Usage: <venv>/bin/python dump_db.py URL
Exit 3 with the hub's own message when the release refuses the database's schema.
"""
import json
import sys

import sqlalchemy
from jupyterhub import orm

url = sys.argv[1]
try:
    orm.new_session_factory(url)
except orm.DatabaseSchemaMismatch as error:
    print(str(error), file=sys.stderr)
    sys.exit(3)

engine = sqlalchemy.create_engine(url)
inspector = sqlalchemy.inspect(engine)
dump = {}
metadata = sqlalchemy.MetaData()
with engine.connect() as connection:
    for table in sorted(inspector.get_table_names()):
        columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(table)]
        reflected = sqlalchemy.Table(table, metadata, autoload_with=connection)
        rows = connection.execute(reflected.select()).fetchall()
        dump[table] = {
            "columns": columns,
            "rows": sorted(json.dumps([str(v) for v in row]) for row in rows),
        }
print(json.dumps(dump, sort_keys=True, indent=1))
