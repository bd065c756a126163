"""Real PostgreSQL clients against `ladu serve`: psycopg 3, pandas, and raw protocol bytes.

usage: serve_client.py PORT USER PASSWORD COMMAND [ARGS...]; prints JSON.
"""
import json
import os
import socket
import struct
import sys
import threading
import time

import psycopg
from psycopg import pq


def connect(port, user, password, **kw):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="ladu",
                           connect_timeout=20, **kw)


def rows(port, user, password, queries):
    """Each query's rows as lists of strings, or its SQLSTATE and message."""
    out = []
    with connect(port, user, password, autocommit=True) as c:
        for q in queries:
            try:
                with c.cursor() as cur:
                    cur.execute(q)
                    out.append({"rows": [[None if v is None else str(v) for v in r] for r in cur.fetchall()]})
            except psycopg.Error as e:
                out.append({"error": e.sqlstate, "message": str(e)})
    return out


def extended(port, user, password):
    """Parameters in text and binary, prepared statements and SET, isolated between two connections."""
    out = {}
    a = connect(port, user, password, autocommit=True)
    b = connect(port, user, password, autocommit=True)
    with a.cursor() as cur:
        cur.execute("SELECT count(*) FROM treatment_invoices WHERE amount > %s AND care_type = %s", (10, "AMB"))
        out["text_params"] = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM treatment_invoices WHERE amount > %b AND care_type = %b", (10, "AMB"))
        out["binary_params"] = cur.fetchone()[0]
        cur.execute("SELECT amount, start_date, care_type FROM treatment_invoices ORDER BY record_id LIMIT 3",
                    binary=True)
        binary = [[str(v) for v in r] for r in cur.fetchall()]
        cur.execute("SELECT amount, start_date, care_type FROM treatment_invoices ORDER BY record_id LIMIT 3")
        text = [[str(v) for v in r] for r in cur.fetchall()]
        out["binary_equals_text"] = binary == text
        for i in range(3):
            cur.execute("SELECT count(*) FROM treatment_invoices WHERE care_type = %s", ("STAT",), prepare=True)
            out["prepared"] = cur.fetchone()[0]
        cur.execute("SET application_name = 'connection a'")
    with b.cursor() as cur:
        cur.execute("SHOW application_name")
        out["b_application_name"] = cur.fetchone()[0]
    with a.cursor() as cur:
        cur.execute("SHOW application_name")
        out["a_application_name"] = cur.fetchone()[0]
    # A statement prepared by name on one connection is unknown on the other.
    r = a.pgconn.prepare(b"mine", b"SELECT count(*) FROM treatment_invoices")
    out["prepare_a"] = r.status == pq.ExecStatus.COMMAND_OK
    r = a.pgconn.exec_prepared(b"mine", [])
    out["exec_a"] = r.get_value(0, 0).decode() if r.status == pq.ExecStatus.TUPLES_OK else r.error_message.decode()
    r = b.pgconn.exec_prepared(b"mine", [])
    out["exec_b"] = r.error_field(pq.DiagnosticField.SQLSTATE).decode() if r.status != pq.ExecStatus.TUPLES_OK else "ran"
    # pandas with parameters.
    import pandas
    with a.cursor() as cur:
        frame = pandas.read_sql("SELECT care_type, count(*) AS n FROM treatment_invoices WHERE amount > %(m)s "
                                "GROUP BY care_type ORDER BY care_type", a, params={"m": 10})
    out["pandas"] = {k: int(v) for k, v in zip(frame["care_type"], frame["n"])}
    # Session commands that clients and tools send.
    with a.cursor() as cur:
        for q in ["BEGIN", "COMMIT", "DISCARD ALL", "SET extra_float_digits = 3", "SHOW server_version"]:
            cur.execute(q)
        out["server_version"] = cur.fetchone()[0]
        try:
            cur.execute("SET datafusion.execution.batch_size = 1")
            out["set_datafusion"] = "accepted"
        except psycopg.Error as e:
            out["set_datafusion"] = e.sqlstate
    # A session command through the extended protocol (libpq's PQexecParams: Parse, Bind, Execute).
    r = a.pgconn.exec_params(b"SET extra_float_digits = 2", [])
    out["extended_set"] = r.status == pq.ExecStatus.COMMAND_OK
    a.close()
    b.close()
    return out


def cancel(port, user, password, query):
    """Cancel a running query from another thread; the connection goes on."""
    with connect(port, user, password, autocommit=True) as c:
        def later():
            time.sleep(1.5)
            c.cancel_safe()
        threading.Thread(target=later).start()
        started = time.time()
        try:
            c.execute(query)
            outcome = "finished"
        except psycopg.errors.QueryCanceled as e:
            outcome = "cancelled: " + str(e)
        after = c.execute("SELECT 6 * 7").fetchone()[0]
        return {"outcome": outcome, "seconds": time.time() - started, "after": after}


def error_of(port, user, password, query):
    with connect(port, user, password, autocommit=True) as c:
        try:
            c.execute(query).fetchall()
            return {"outcome": "ok"}
        except psycopg.Error as e:
            return {"outcome": "error", "sqlstate": e.sqlstate, "message": str(e)}


def hold(port, user, password, count, seconds):
    """Open `count` connections, keep them for `seconds`; report which logged in."""
    conns, errors = [], []
    for _ in range(count):
        try:
            conns.append(connect(port, user, password))
        except psycopg.Error as e:
            errors.append(str(e))
    time.sleep(seconds)
    for c in conns:
        c.close()
    return {"connected": len(conns), "errors": errors}


def leave_midway(port, user, password, query):
    """Read a few rows of a large result, then drop the connection."""
    c = connect(port, user, password, autocommit=True)
    first = []
    for row in c.cursor().stream(query):
        first.append(row)
        if len(first) == 10:
            # Gone without a word: no cancel request, no Terminate (psycopg would send both).
            socket.socket(fileno=os.dup(c.pgconn.socket)).shutdown(socket.SHUT_RDWR)
            print(json.dumps({"read": len(first)}), flush=True)
            os._exit(0)
    return {"read": len(first)}


# What DBeaver (through pgjdbc) and R's RPostgres send when connecting and
# browsing, as they send it; `{ns}` and `{table}` are the oids they bind.
DBEAVER = [
    "SET extra_float_digits = 3",
    "SET application_name = 'DBeaver 24.3.0 - Main'",
    "SELECT current_schema(),session_user",
    "SHOW search_path",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datallowconn AND NOT datistemplate "
    "OR db.datname=%s ORDER BY db.datname",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d "
    "ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT c.oid,c.*,d.description FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d "
    "ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass "
    "WHERE c.relnamespace=%s AND c.relkind not in ('i','I','c')",
    "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description "
    "FROM pg_catalog.pg_attribute a INNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid) "
    "LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum) "
    "LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid) "
    "WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=%s ORDER BY a.attnum",
]
RPOSTGRES = [
    "SELECT oid, typname FROM pg_type",
    "SELECT cl.relname AS name FROM pg_class AS cl JOIN pg_namespace AS n ON cl.relnamespace = n.oid "
    "WHERE (n.nspname = ANY (current_schemas(true))) AND (n.nspname <> 'pg_catalog') "
    "AND (cl.relkind IN ('r', 'p', 'f', 'v', 'm')) ORDER BY name",
    "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
]


def browse(port, user, password, table):
    """Each tool's queries in turn: rows (as strings) or the error; parameters bound as the tools bind them."""
    out = {"dbeaver": [], "rpostgres": []}
    with connect(port, user, password, autocommit=True) as c, c.cursor() as cur:
        def run(tool, query, params=None):
            try:
                cur.execute(query, params)
                got = cur.fetchall() if cur.description else []
                names = [d.name for d in cur.description] if cur.description else []
                out[tool].append({"columns": names, "rows": [[None if v is None else str(v) for v in r] for r in got]})
            except psycopg.Error as e:
                out[tool].append({"error": e.sqlstate, "message": str(e)})
            return out[tool][-1]
        cur.execute("SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'")
        ns = cur.fetchone()[0]
        cur.execute("SELECT oid FROM pg_catalog.pg_class WHERE relname = %s", (table,))
        found = cur.fetchone()
        oid = found[0] if found else 0
        for q in DBEAVER:
            params = {"db.datname=%s": ("ladu",), "relnamespace=%s": (ns,), "c.oid=%s": (oid,)}
            run("dbeaver", q, next((v for k, v in params.items() if k in q), None))
        for q in RPOSTGRES:
            run("rpostgres", q, (table,) if "%s" in q else None)
    return out


def stall(port, user, password, query, seconds):
    """Send a query with a large result and take none of it for `seconds`; then read
    what is there: whether the server closed the connection (the client never does)."""
    c = connect(port, user, password, autocommit=True)
    c.pgconn.send_query(query.encode())
    time.sleep(seconds)
    raw = socket.socket(fileno=os.dup(c.pgconn.socket))
    raw.settimeout(5)
    closed, taken, deadline = False, 0, time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            data = raw.recv(1 << 20)
            if not data:
                closed = True
                break
            taken += len(data)
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass  # open, and silent: the server neither sends nor closes
    return {"closed": closed, "taken": taken}


def startup(user, extra=b""):
    params = b"user\0" + user.encode() + b"\0database\0ladu\0\0"
    body = struct.pack("!i", 196608) + params
    return struct.pack("!i", len(body) + 4) + body + extra


def exchange(port, payload, wait=5.0):
    """Send raw bytes; return what the server answered before it closed (or `wait` passed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    got = b""
    try:
        s.sendall(payload)
        deadline = time.time() + wait
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return {"closed": True, "answer": got.decode("latin-1")}
            got += chunk
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return {"closed": False, "answer": got.decode("latin-1")}


def malformed(port, user):
    """Hostile bytes, each on a connection of its own."""
    import random
    rnd = random.Random(7)
    out = {}
    out["random"] = [exchange(port, bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))), 3)["closed"]
                     for _ in range(20)]
    # A startup message whose length claims a gigabyte.
    out["huge_startup"] = exchange(port, struct.pack("!i", 1 << 30) + b"\0\3\0\0", 5)
    # A length below the header's own four bytes.
    out["short_length"] = exchange(port, struct.pack("!i", 2) + b"\0\3", 5)
    # A cleartext password answered to the SCRAM request.
    out["cleartext"] = exchange(port, startup(user) + b"p" + struct.pack("!i", 4 + 12) + b"a password!\0", 5)
    # A query message claiming a gigabyte, before logging in.
    out["huge_query"] = exchange(port, startup(user) + b"Q" + struct.pack("!i", 1 << 30) + b"SELECT", 5)
    return out


def never_ends(port, seconds):
    """A startup message that never ends: the server must close it on its own."""
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    s.sendall(struct.pack("!i", 500) + b"\0\3\0\0user\0")
    started = time.time()
    try:
        closed = s.recv(100) is not None
    except socket.timeout:
        closed = False
    except ConnectionResetError:
        closed = True
    s.close()
    return {"closed": closed, "seconds": time.time() - started}


def main():
    port, user, password, command = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    args = sys.argv[5:]
    if command == "rows":
        result = rows(port, user, password, json.loads(args[0]))
    elif command == "extended":
        result = extended(port, user, password)
    elif command == "cancel":
        result = cancel(port, user, password, args[0])
    elif command == "error":
        result = error_of(port, user, password, args[0])
    elif command == "hold":
        result = hold(port, user, password, int(args[0]), float(args[1]))
    elif command == "leave":
        result = leave_midway(port, user, password, args[0])
    elif command == "browse":
        result = browse(port, user, password, args[0])
    elif command == "stall":
        result = stall(port, user, password, args[0], float(args[1]))
    elif command == "malformed":
        result = malformed(port, user)
    elif command == "never_ends":
        result = never_ends(port, float(args[0]))
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
