"""The DESIGN.md pseudonym contract in plain Python.

usage: pseudonym.py KEYHEX KIND ID   -> P(kind, id)
       pseudonym.py KEYHEX --fingerprint
       pseudonym.py KEYHEX --release RECIPIENT ISIKUKOOD -> the person's release pseudonym for RECIPIENT
"""
import hashlib
import hmac
import sys

key = bytes.fromhex(sys.argv[1])
if sys.argv[2] == "--release":
    p = hmac.new(key, f"ladu:v1:isikukood:{sys.argv[4]}".encode(), hashlib.sha256).hexdigest()[:32]
    msg = f"ladu:release:{sys.argv[3]}:{p}".encode()
    print(hmac.new(key, msg, hashlib.sha256).hexdigest()[:32])
elif sys.argv[2] == "--fingerprint":
    print(hmac.new(key, b"ladu:fingerprint", hashlib.sha256).hexdigest()[:16])
else:
    msg = f"ladu:v1:{sys.argv[2]}:{sys.argv[3]}".encode()
    print(hmac.new(key, msg, hashlib.sha256).hexdigest()[:32])
