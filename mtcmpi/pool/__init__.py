"""Pools a notebook drives: mtcmpi.connect() (session.py) and `mtcmpi serve` (serve.py).

connection.py the file and its keys; auth.py who may connect (CURVE); wire.py the messages;
hub.py the session (queue, pools, heartbeats); calls.py a call as bytes at both ends;
record.py the per-task record; commands.py the `serve` and `hub` subcommands.
"""
