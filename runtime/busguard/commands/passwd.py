"""`busguard passwd USER`: add or change a web user (scrypt hash, file mode 0600)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from busguard.commands import secrets_file
from busguard.web.passwd import (
    PasswdError,
    check_user,
    hash_password,
    read_users,
    write_users,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("passwd", help="add, change or delete a user of the web page",
                       description=(
        "Set USER's password for the [web] page and /metrics (HTTP basic auth). The file "
        "holds scrypt hashes only and is written with mode 0600; default: the [web] "
        "`passwd` of --site (./site.toml), else ./web.passwd. The running server picks the "
        "change up at the next request."))
    p.add_argument("user", help="user name (letters, digits, . _ - @)")
    p.add_argument("--site", help="site file whose [web] passwd to use (default ./site.toml)")
    p.add_argument("--file", help="the users file itself (overrides --site)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin (scripts)")
    p.add_argument("--delete", action="store_true", help="remove USER")
    p.set_defaults(func=run)


def users_file(site: str | None) -> Path:
    from busguard.web.publisher import WebPublisher

    return secrets_file(site, "web", WebPublisher, "passwd")


def run(args: argparse.Namespace) -> int:
    try:
        user = check_user(args.user)
        path = Path(args.file) if args.file else users_file(args.site)
        users = read_users(path) if path.exists() else {}
        if args.delete:
            if users.pop(user, None) is None:
                print(f"busguard passwd: no user {user!r} in {path}", file=sys.stderr)
                return 1
            write_users(path, users)
            print(f"removed {user} from {path}")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {user}: ")
            if getpass.getpass("again: ") != password:
                print("busguard passwd: the passwords differ; nothing changed", file=sys.stderr)
                return 1
        if len(password) < 8:
            print("busguard passwd: a password needs at least 8 characters", file=sys.stderr)
            return 1
        existed = user in users
        users[user] = hash_password(password)
        write_users(path, users)
    except PasswdError as exc:
        print(f"busguard passwd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"busguard passwd: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{'changed' if existed else 'added'} {user} in {path} (mode 0600)")
    return 0
