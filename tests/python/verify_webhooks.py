"""Verify captured webhook requests with the standardwebhooks package.

Reads a JSON list of {"secret", "headers", "body"} from stdin and writes a
JSON list of {"ok", "error"} to stdout, one per case, in order. The body is
the request body exactly as received (UTF-8 text). The package is the
reference implementation from PyPI, not FlowTrack's own signing code.
"""
import json
import sys

import standardwebhooks
from standardwebhooks import Webhook, WebhookVerificationError


def main():
    results = []
    for case in json.load(sys.stdin):
        try:
            Webhook(case["secret"]).verify(case["body"], case["headers"])
            results.append({"ok": True, "error": None})
        except WebhookVerificationError as e:
            results.append({"ok": False, "error": str(e)})
    json.dump({"version": standardwebhooks.__version__, "results": results}, sys.stdout)


main()
