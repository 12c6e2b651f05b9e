"""Independent check of the notification service's email: a real `crm serve` sends a rule's
email to a real SMTP server process (aiosmtpd from PyPI, storing what it takes in a maildir),
and Python's own email parser reads it back: sender, recipient, subject, and the text and HTML
parts of a multipart/alternative message rendered from the rule's templates. A due task's
reminder reaches its assignee at the address of their preferences.

Then over TLS, with a company's own certificate authority (made by trustme): to a server that
refuses mail before STARTTLS (`?tls=required`) and to one that speaks TLS only (`smtps://`),
each trusting the authority of CRM_SMTP_CA_FILE; and without that file, the server's
certificate is refused and the email is kept pending with the reason, never sent in clear.

Usage: python email_smtp.py PATH_TO_CRM_BINARY
"""

import email.policy
import mailbox
import os
import socket
import subprocess
import sys
import tempfile
import time

import trustme

from crm_serve import call, start, stop, token


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_server(maildir, tls=(), quiet=False):
    """aiosmtpd as its own process, keeping each message in `maildir` (`tls`: its TLS options;
    `quiet`: its log dropped, where failed handshakes are expected)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", *tls,
         "-c", "aiosmtpd.handlers.Mailbox", maildir],
        stderr=subprocess.DEVNULL if quiet else None,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("aiosmtpd did not start")


def messages(maildir, count):
    for _ in range(300):
        box = mailbox.Maildir(maildir, factory=None, create=False)
        found = [email.message_from_bytes(m.as_bytes(), policy=email.policy.default) for m in box]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise SystemExit(f"{count} emails did not arrive")


def main(binary):
    with tempfile.TemporaryDirectory() as work:
        maildir = os.path.join(work, "maildir")
        smtp, port = smtp_server(maildir)
        data = os.path.join(work, "data")
        os.mkdir(data)
        process, base, _ = start(binary, data, {
            "CRM_SMTP_URL": f"smtp://127.0.0.1:{port}",
            "CRM_EMAIL_FROM": "Acme CRM <crm@acme.test>",
        })
        try:
            admin = token(binary, "acme", "alice", "admin")
            call(base, admin, "POST", "/v1/rules", {
                "displayName": "Big wins", "eventTypes": ["crm.pipeline.v1.DealWon"],
                "condition": "deal.amount.amount_minor >= 1000",
                "recipients": ["mailto:cfo@acme.test"], "channels": ["CHANNEL_EMAIL"],
                "emailTemplate": {
                    "subject": "Won: {{ data.deal.displayName }}",
                    "text": "{{ data.deal.displayName }}: {{ data.deal.amount.amountMinor }} {{ data.deal.amount.currencyCode }}",
                    "html": "<h1>{{ data.deal.displayName }}</h1>",
                },
            })
            call(base, admin, "PATCH", "/v1/users/erin/notificationPreferences", {"emailAddress": "erin@acme.test"})
            pipeline = call(base, admin, "POST", "/v1/pipelines", {"displayName": "Sales", "stages": [
                {"displayName": "Open", "kind": "STAGE_KIND_OPEN"},
                {"displayName": "Won", "kind": "STAGE_KIND_WON"},
                {"displayName": "Lost", "kind": "STAGE_KIND_LOST"},
            ]})
            deal = call(base, admin, "POST", "/v1/deals", {
                "displayName": "Initech <renewal>", "pipeline": pipeline["name"],
                "amount": {"amountMinor": "250000", "currencyCode": "EUR"},
            })
            call(base, admin, "POST", f"/v1/{deal['name']}:close", {"outcome": "DEAL_STATUS_WON", "reason": "signed"})
            due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
            call(base, admin, "POST", "/v1/tasks", {"title": "Send the contract", "assignee": "erin", "dueTime": due})

            by_to = {str(m["To"]): m for m in messages(maildir, 2)}
            won = by_to["cfo@acme.test"]
            assert won["Subject"] == "Won: Initech <renewal>", won["Subject"]
            assert won["From"].addresses[0].addr_spec == "crm@acme.test", won["From"]
            assert won.get_content_type() == "multipart/alternative", won.get_content_type()
            text = won.get_body(("plain",)).get_content().strip()
            html = won.get_body(("html",)).get_content().strip()
            assert text == "Initech <renewal>: 250000 EUR", text
            assert html == "<h1>Initech &lt;renewal&gt;</h1>", html
            reminder = by_to["erin@acme.test"]
            assert reminder["Subject"] == "Task due: Send the contract", reminder["Subject"]
            assert "Send the contract" in reminder.get_body(("plain",)).get_content()
            emails = call(base, admin, "GET", "/v1/emails")["emails"]
            states = sorted((e["recipient"], e["state"]) for e in emails)
            assert states == [("mailto:cfo@acme.test", "EMAIL_STATE_SENT"), ("users/erin", "EMAIL_STATE_SENT")], states
            print("2 emails taken by aiosmtpd and read back by Python's email parser: subject, sender, text and HTML parts")
        finally:
            stop(process)
            smtp.terminate()
            smtp.wait(timeout=10)
    over_tls(binary)


def deal_created_email(binary, work, name, env):
    """`crm serve` in its own data directory with `env`, a rule emailing ops@acme.test of each
    new deal, and one deal: (process, REST base, admin token)."""
    data = os.path.join(work, name)
    os.mkdir(data)
    process, base, _ = start(binary, data, env)
    try:
        admin = token(binary, "acme", "alice", "admin")
        call(base, admin, "POST", "/v1/rules", {
            "displayName": "New deals", "eventTypes": ["crm.pipeline.v1.DealCreated"],
            "recipients": ["mailto:ops@acme.test"], "channels": ["CHANNEL_EMAIL"],
            "emailTemplate": {"subject": f"New deal over {name}", "text": "{{ data.deal.displayName }}"},
        })
        pipeline = call(base, admin, "POST", "/v1/pipelines", {"displayName": "Sales", "stages": [
            {"displayName": "Open", "kind": "STAGE_KIND_OPEN"},
            {"displayName": "Won", "kind": "STAGE_KIND_WON"},
            {"displayName": "Lost", "kind": "STAGE_KIND_LOST"},
        ]})
        call(base, admin, "POST", "/v1/deals", {
            "displayName": "Initech", "pipeline": pipeline["name"],
            "amount": {"amountMinor": "1000", "currencyCode": "EUR"},
        })
    except BaseException:
        stop(process)
        raise
    return process, base, admin


def over_tls(binary):
    with tempfile.TemporaryDirectory() as work:
        authority = trustme.CA()
        ca_file = os.path.join(work, "ca.pem")
        authority.cert_pem.write_to_path(ca_file)
        cert = authority.issue_cert("127.0.0.1")
        chain, key = os.path.join(work, "server.pem"), os.path.join(work, "server.key")
        cert.private_key_and_cert_chain_pem.write_to_path(chain)
        cert.private_key_pem.write_to_path(key)
        for name, options, url in [
            # aiosmtpd refuses MAIL before STARTTLS: mail that arrives went over TLS.
            ("starttls", ["--tlscert", chain, "--tlskey", key], "smtp://127.0.0.1:{port}?tls=required"),
            ("smtps", ["--smtpscert", chain, "--smtpskey", key], "smtps://127.0.0.1:{port}"),
        ]:
            maildir = os.path.join(work, f"maildir-{name}")
            smtp, port = smtp_server(maildir, options)
            process = None
            try:
                process, _, _ = deal_created_email(binary, work, name, {
                    "CRM_SMTP_URL": url.format(port=port), "CRM_SMTP_CA_FILE": ca_file,
                })
                [taken] = messages(maildir, 1)
                assert taken["Subject"] == f"New deal over {name}", taken["Subject"]
                assert str(taken["To"]) == "ops@acme.test", taken["To"]
            finally:
                if process:
                    stop(process)
                smtp.terminate()
                smtp.wait(timeout=10)
            print(f"an email went over TLS ({name}) to a server whose certificate chains to CRM_SMTP_CA_FILE")

        # Without the authority the server's certificate is not trusted: nothing is sent, and
        # the email waits with the reason.
        maildir = os.path.join(work, "maildir-untrusted")
        smtp, port = smtp_server(maildir, ["--tlscert", chain, "--tlskey", key], quiet=True)
        process = None
        try:
            process, base, admin = deal_created_email(binary, work, "untrusted", {
                "CRM_SMTP_URL": f"smtp://127.0.0.1:{port}?tls=required",
            })
            emails = []
            for _ in range(150):
                emails = call(base, admin, "GET", "/v1/emails")["emails"]
                if emails and emails[0].get("attempts", 0) >= 1:
                    break
                time.sleep(0.1)
            assert len(emails) == 1 and emails[0].get("attempts", 0) >= 1, emails
            [kept] = emails
            assert kept["state"] == "EMAIL_STATE_PENDING", kept
            assert "certificate" in kept["lastError"].lower(), kept["lastError"]
            box = mailbox.Maildir(maildir, factory=None, create=False) if os.path.isdir(maildir) else []
            assert len(list(box)) == 0, "mail went to an untrusted server"
        finally:
            if process:
                stop(process)
            smtp.terminate()
            smtp.wait(timeout=10)
        print("without CRM_SMTP_CA_FILE the server's certificate is refused: the email waits, retried, with the reason")


if __name__ == "__main__":
    main(sys.argv[1])
