"""Interop check: a client generated from proto/ by another toolchain (Python grpcio-tools)
runs the whole contact lifecycle against a real `crm serve`: create (idempotent), get,
field-mask update with etag, paging, search, interactions, delete, and the error details.

Usage: python grpc_interop.py PATH_TO_CRM_BINARY
"""

import pathlib
import sys
import tempfile

from grpc_tools import protoc

from crm_serve import start, token

ROOT = pathlib.Path(__file__).resolve().parents[2]


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    for package in ("crm", "crm/common", "crm/contact", "crm/events", "crm/common/v1", "crm/contact/v1", "crm/events/v1"):
        (out / package / "__init__.py").touch()


def main() -> int:
    binary = sys.argv[1]
    work = pathlib.Path(tempfile.mkdtemp())
    generate(work / "gen")
    sys.path.insert(0, str(work / "gen"))
    import grpc
    from google.protobuf import field_mask_pb2, timestamp_pb2
    from crm.contact.v1 import contact_pb2 as pb
    from crm.contact.v1 import contact_pb2_grpc as rpc

    process, _, address = start(binary, str(work))
    passed = failed = 0

    def check(name, condition):
        nonlocal passed, failed
        if condition:
            passed += 1
        else:
            failed += 1
            print(f"FAILED: {name}", file=sys.stderr)

    try:
        channel = grpc.insecure_channel(address)
        stub = rpc.ContactServiceStub(channel)
        auth = [("authorization", "Bearer " + token(binary, "interop", "alice", "rep"))]

        contact = pb.Contact(given_name="Grace", family_name="Hopper", title="Rear Admiral",
                             emails=[pb.EmailAddress(address="grace@navy.example")],
                             lifecycle_stage=pb.LIFECYCLE_STAGE_CUSTOMER, tags=["cobol"])
        created = stub.CreateContact(pb.CreateContactRequest(contact=contact, request_id="py-1"), metadata=auth).contact
        again = stub.CreateContact(pb.CreateContactRequest(contact=contact, request_id="py-1"), metadata=auth).contact
        check("idempotent create", again.name == created.name)
        check("owner defaults to caller", created.owner == "alice")

        got = stub.GetContact(pb.GetContactRequest(name=created.name), metadata=auth).contact
        check("get", got == created)

        patch = pb.Contact(name=created.name, title="Commodore", family_name="IGNORED", etag=created.etag)
        updated = stub.UpdateContact(pb.UpdateContactRequest(contact=patch, update_mask=field_mask_pb2.FieldMask(paths=["title"])), metadata=auth).contact
        check("field mask update", updated.title == "Commodore" and updated.family_name == "Hopper")
        try:
            stub.UpdateContact(pb.UpdateContactRequest(contact=patch, update_mask=field_mask_pb2.FieldMask(paths=["title"])), metadata=auth)
            check("stale etag refused", False)
        except grpc.RpcError as err:
            check("stale etag refused", err.code() == grpc.StatusCode.FAILED_PRECONDITION)

        try:
            bad = pb.Contact(given_name="X", emails=[pb.EmailAddress(address="nope")])
            stub.CreateContact(pb.CreateContactRequest(contact=bad), metadata=auth)
            check("invalid email refused", False)
        except grpc.RpcError as err:
            details = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
            check("invalid email refused", err.code() == grpc.StatusCode.INVALID_ARGUMENT and details is not None)

        for i in range(23):
            stub.CreateContact(pb.CreateContactRequest(contact=pb.Contact(given_name=f"Page{i}")), metadata=auth)
        names, page_token = [], ""
        while True:
            page = stub.ListContacts(pb.ListContactsRequest(page_size=5, page_token=page_token, order_by="given_name"), metadata=auth)
            names += [c.name for c in page.contacts]
            page_token = page.next_page_token
            if not page_token:
                break
        check("paging sees every contact once", len(names) == 24 and len(set(names)) == 24)

        found = stub.SearchContacts(pb.SearchContactsRequest(query="hopp"), metadata=auth).contacts
        check("search", [c.name for c in found] == [created.name])

        when = timestamp_pb2.Timestamp(seconds=1_790_000_000)
        call = stub.CreateInteraction(pb.CreateInteractionRequest(
            parent=created.name, interaction=pb.Interaction(type=pb.INTERACTION_TYPE_CALL, occur_time=when, subject="bug")), metadata=auth).interaction
        timeline = stub.ListInteractions(pb.ListInteractionsRequest(parent=created.name), metadata=auth).interactions
        check("interaction logged", [i.name for i in timeline] == [call.name])

        other = [("authorization", "Bearer " + token(binary, "someone-else", "eve", "admin"))]
        try:
            stub.GetContact(pb.GetContactRequest(name=created.name), metadata=other)
            check("other tenant gets NOT_FOUND", False)
        except grpc.RpcError as err:
            check("other tenant gets NOT_FOUND", err.code() == grpc.StatusCode.NOT_FOUND)

        stub.DeleteContact(pb.DeleteContactRequest(name=created.name, etag=updated.etag), metadata=auth)
        try:
            stub.GetContact(pb.GetContactRequest(name=created.name), metadata=auth)
            check("deleted", False)
        except grpc.RpcError as err:
            check("deleted", err.code() == grpc.StatusCode.NOT_FOUND)
    finally:
        process.terminate()
        process.wait(timeout=20)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
