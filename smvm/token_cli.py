"""`smvm token create | rotate | revoke | list`: manage the hashed token file (SMVM_TOKENS_FILE or --file).

The secret is printed once, at creation, and never stored; the file holds its sha256, role,
project scope, expiry and revocation, and can be mounted as a Kubernetes Secret.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys

from smvm.auth import ROLES, TokenFile, dump_records, iso_z
from smvm.errors import InvalidArgument

_DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_duration(text: str, field: str = "expires_in") -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidArgument(field, "must look like 30d, 12h or 90m")
    amount, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})


def _file(args) -> TokenFile:
    path = args.file or os.environ.get("SMVM_TOKENS_FILE", "")
    if not path:
        raise SystemExit("no token file: pass --file or set SMVM_TOKENS_FILE")
    return TokenFile(path)


def cmd_create(args) -> int:
    expires = dt.datetime.now(dt.timezone.utc) + parse_duration(args.expires_in) if args.expires_in else None
    secret = _file(args).create(args.name, args.role, args.project or ["*"], expires_at=expires)
    print(json.dumps({"name": args.name, "role": args.role, "projects": args.project or ["*"],
                      "expires_at": iso_z(expires) if expires else "", "token": secret}, indent=2))
    print("store the token now: only its hash is kept", file=sys.stderr)
    return 0


def cmd_rotate(args) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    overlap = parse_duration(args.overlap, "overlap") if args.overlap != "0" else dt.timedelta(0)
    expires = now + parse_duration(args.expires_in) if args.expires_in else None
    token_file = _file(args)
    secret = token_file.rotate(args.name, args.new_name, overlap, expires_at=expires, now=now)
    old = next(r for r in token_file.records() if r.name == args.name)
    print(json.dumps({"name": args.new_name, "replaces": args.name, "old_token_accepted_until":
                      "" if old.revoked else old.expires_at, "old_token_revoked": old.revoked,
                      "expires_at": iso_z(expires) if expires else "", "token": secret}, indent=2))
    print("store the token now: only its hash is kept", file=sys.stderr)
    return 0


def cmd_revoke(args) -> int:
    _file(args).revoke(args.name)
    print(json.dumps({"name": args.name, "revoked": True}))
    return 0


def cmd_list(args) -> int:
    print(dump_records(_file(args).records()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="create, revoke or list scoped API tokens")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser("create", help="add a token and print its secret once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--project", action="append", help="project id in scope (repeat; omit for every project)")
    create.add_argument("--expires-in", help="lifetime, e.g. 30d, 12h, 90m (default: no expiry)")
    create.set_defaults(func=cmd_create)
    rotate = actions.add_parser("rotate", help="replace a token by a new one (same role and projects); the old one "
                                "keeps working for --overlap")
    rotate.add_argument("name")
    rotate.add_argument("--new-name", required=True, help="name of the replacement token")
    rotate.add_argument("--overlap", default="7d", help="how long the old token stays valid, e.g. 7d, 12h; 0 = revoke now")
    rotate.add_argument("--expires-in", help="lifetime of the new token, e.g. 90d (default: no expiry)")
    rotate.set_defaults(func=cmd_rotate)
    revoke = actions.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)
    listing = actions.add_parser("list", help="list tokens (never their secrets or hashes)")
    listing.set_defaults(func=cmd_list)
    for parser in (create, rotate, revoke, listing):
        parser.add_argument("--file", help="token file (default: $SMVM_TOKENS_FILE)")
