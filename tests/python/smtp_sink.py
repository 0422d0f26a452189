"""An SMTP sink for the integration tests: aiosmtpd (PyPI), an independent
SMTP server, on 127.0.0.1 at a port the OS picks.

usage: smtp_sink.py USERNAME PASSWORD

Prints {"port": N} once listening, then one JSON line per accepted message:
{"login", "mail_from", "rcpt_tos", "data"}. AUTH (PLAIN or LOGIN) is required
and must match USERNAME and PASSWORD; no TLS (the test connects in plain text
to loopback). Runs until killed.
"""

import asyncio
import json
import socket
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER, PASSWORD = sys.argv[1].encode(), sys.argv[2].encode()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        print(json.dumps({
            "login": login,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 OK"


async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    loop = asyncio.get_running_loop()
    await loop.create_server(
        lambda: SMTP(Handler(), authenticator=authenticator, auth_required=True, auth_require_tls=False),
        sock=sock,
    )
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
