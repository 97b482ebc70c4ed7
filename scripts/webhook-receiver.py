#!/usr/bin/env python3
"""A local webhook receiver for the demo: prints each POST (its headers and body),
checks Coverbase-Signature when a secret is given, and answers 204.

    python3 scripts/webhook-receiver.py 9999 [whsec_demo]
"""
import hashlib
import hmac
import http.server
import sys


class Receiver(http.server.BaseHTTPRequestHandler):
    secret = sys.argv[2].encode() if len(sys.argv) > 2 else None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(f"POST {self.path}  delivery {self.headers.get('Coverbase-Delivery-Id')}")
        if self.secret is not None:
            expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            print("  signature", "ok" if hmac.compare_digest(expected, self.headers.get("Coverbase-Signature", "")) else "WRONG")
        print("  " + body.decode("utf-8", "replace"), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    print(f"listening on 127.0.0.1:{port}", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
