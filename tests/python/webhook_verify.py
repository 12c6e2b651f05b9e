"""Independent check of the notification service's webhook signatures: a real `crm serve`
posts a webhook to a receiver here, and the Standard Webhooks reference library (the
`standardwebhooks` package from PyPI, not the service's code) verifies it; a tampered body
must fail.

Usage: python webhook_verify.py PATH_TO_CRM_BINARY
"""

import http.server
import sys
import tempfile
import threading
import time

from standardwebhooks import Webhook

from crm_serve import call, start, stop, token


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main(binary):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    with tempfile.TemporaryDirectory() as data:
        process, base, _ = start(binary, data)
        try:
            admin = token(binary, "acme", "alice", "admin")
            endpoint = call(base, admin, "POST", "/v1/webhookEndpoints", {"url": url})
            call(base, admin, "POST", "/v1/rules", {
                "displayName": "New deals", "eventTypes": ["crm.pipeline.v1.DealCreated"],
                "recipients": [endpoint["name"]],
            })
            pipeline = call(base, admin, "POST", "/v1/pipelines", {"displayName": "Sales", "stages": [
                {"displayName": "Open", "kind": "STAGE_KIND_OPEN"},
                {"displayName": "Won", "kind": "STAGE_KIND_WON"},
                {"displayName": "Lost", "kind": "STAGE_KIND_LOST"},
            ]})
            deal = call(base, admin, "POST", "/v1/deals", {
                "displayName": "Verified", "pipeline": pipeline["name"],
                "amount": {"amountMinor": "1000", "currencyCode": "EUR"},
            })
            for _ in range(300):
                if Receiver.received:
                    break
                time.sleep(0.1)
            if not Receiver.received:
                raise SystemExit("no webhook arrived")
            headers, body = Receiver.received[0]
            payload = Webhook(endpoint["secret"]).verify(body, headers)
            assert payload["type"] == "crm.pipeline.v1.DealCreated", payload
            assert payload["subject"] == deal["name"], payload
            try:
                Webhook(endpoint["secret"]).verify(body.replace(b"Verified", b"Forged"), headers)
            except Exception:
                pass
            else:
                raise SystemExit("a tampered body verified")
            print(f"webhook {headers.get('webhook-id')} verified by standardwebhooks; a tampered body refused")
        finally:
            stop(process)


if __name__ == "__main__":
    main(sys.argv[1])
