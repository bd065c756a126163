"""The DESIGN.md pseudonym contract in plain Python.

usage: pseudonym.py KEYHEX KIND ID   -> P(kind, id)
       pseudonym.py KEYHEX --fingerprint
"""
import hashlib
import hmac
import sys

key = bytes.fromhex(sys.argv[1])
if sys.argv[2] == "--fingerprint":
    print(hmac.new(key, b"ladu:fingerprint", hashlib.sha256).hexdigest()[:16])
else:
    msg = f"ladu:v1:{sys.argv[2]}:{sys.argv[3]}".encode()
    print(hmac.new(key, msg, hashlib.sha256).hexdigest()[:32])
