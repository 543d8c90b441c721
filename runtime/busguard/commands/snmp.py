"""`busguard snmp user-add USER` (USM keys in a 0600 file) and `busguard snmp mib`."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from busguard.commands import secrets_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snmp", help="SNMPv3 users and the BUSGUARD-MIB", description=(
        "Manage the [snmp] agent's USM users (master keys in a file of mode 0600, never in "
        "site.toml) or print BUSGUARD-MIB."))
    ssub = p.add_subparsers(dest="snmp_command", metavar="SUBCOMMAND",
                            help="user-add (a USM user) or mib (print BUSGUARD-MIB)")
    u = ssub.add_parser("user-add", help="add or replace a USM user (authPriv)")
    u.add_argument("user", help="USM user name (letters, digits, . _ - @)")
    u.add_argument("--site", help="site file whose [snmp] users file to use "
                   "(default ./site.toml)")
    u.add_argument("--file", help="the users file itself (overrides --site)")
    u.add_argument("--auth", default="SHA-256", help="SHA-256 (default), SHA-384, SHA-512")
    u.add_argument("--priv", default="AES", help="AES (AES-128, default), AES-192, AES-256")
    u.add_argument("--passphrases-stdin", action="store_true",
                   help="read the auth and the priv passphrase from the first two lines of "
                        "stdin (scripts)")
    u.set_defaults(func=run_user_add)
    m = ssub.add_parser("mib", help="print BUSGUARD-MIB (as packaging/mibs ships it)")
    m.set_defaults(func=run_mib)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def users_file(site: str | None) -> Path:
    from busguard.snmp.publisher import SnmpPublisher

    return secrets_file(site, "snmp", SnmpPublisher, "users")


def run_user_add(args: argparse.Namespace) -> int:
    from busguard.snmp.users import UsersError, make_user, read_users, write_users

    try:
        path = Path(args.file) if args.file else users_file(args.site)
        if args.passphrases_stdin:
            lines = sys.stdin.read().splitlines()
            if len(lines) < 2:
                raise UsersError("--passphrases-stdin: two lines expected (auth, then priv)")
            auth_pass, priv_pass = lines[0], lines[1]
        else:
            auth_pass = getpass.getpass("auth passphrase: ")
            priv_pass = getpass.getpass("priv passphrase: ")
        user = make_user(args.user, auth_pass, priv_pass, args.auth, args.priv)
        users = read_users(path) if path.exists() else {}
        users[user.name] = user
        write_users(path, users)
    except UsersError as exc:
        print(f"busguard snmp user-add: {exc}", file=sys.stderr)
        return 1
    print(f"busguard snmp: user {user.name} ({user.auth}, {user.priv}) in {path} (mode 0600)")
    return 0


def run_mib(args: argparse.Namespace) -> int:
    from busguard.snmp.mib import mib_text

    sys.stdout.write(mib_text())
    return 0
