"""Plays a RemoteManager transcript (see admin.txt) over a plain socket; exits 1 on the first
reply line that differs, printing what was expected and what came."""
import re
import socket
import sys

port, transcript = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
replies = sock.makefile("rb")

for number, raw in enumerate(open(transcript, encoding="utf-8"), 1):
    line = raw.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    if line.startswith("> "):
        sock.sendall(line[2:].encode() + b"\r\n")
        continue
    got = replies.readline()
    if line == "<EOF>":
        if got:
            sys.exit(f"{transcript}:{number}: expected the connection to close, got {got!r}")
        continue
    if not got.endswith(b"\r\n"):
        sys.exit(f"{transcript}:{number}: reply line not ended by CRLF: {got!r}")
    text = got[:-2].decode()
    if line.startswith("<~ "):
        ok = re.fullmatch(line[3:], text) is not None
    elif line.startswith("< "):
        ok = text == line[2:]
    else:
        sys.exit(f"{transcript}:{number}: bad transcript line {line!r}")
    if not ok:
        sys.exit(f"{transcript}:{number}: expected {line!r}, got {text!r}")
print("transcript played")
