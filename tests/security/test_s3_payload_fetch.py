"""The worker fetches an `s3_payload` ping's body only from Terra's storage.

Only the origins in AMY_S3_PAYLOAD_HOSTS; never a private, loopback or link-local address unless
that address is itself listed (judged on the address the connection goes to, resolved once); no
redirects. A refused ping is dead-lettered with a readable `bad_data` error and nothing is fetched.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import RawEventState
from ingest.services.payload_fetch import origin_parse
from ingest.services.processing import ProcessStatus
from tests.ingest.test_s3_payload import children_of, new_path, ping, process, store
from tests.payload_server import PayloadServer
from tests.terra import sample

pytestmark = pytest.mark.django_db

NAME = "payloads.amy-test.invalid"  # a name only this test's resolver knows


@pytest.fixture(scope="module")
def server() -> Iterator[PayloadServer]:
    payloads = PayloadServer()
    payloads.start()
    yield payloads
    payloads.stop()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """NAME resolves to the addresses the test sets; every lookup of it is counted in `lookups`."""
    answers: dict[str, list[str]] = {NAME: [], "lookups": []}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == NAME:
            answers["lookups"].append(host)
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))
                for ip in answers[NAME]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def port_of(server: PayloadServer) -> int:
    assert server.server is not None
    return int(server.server.server_address[1])


def dead_with(url: str) -> str:
    result, raw_event = process(store(ping(url)))
    assert result.status == ProcessStatus.DEAD
    assert (raw_event.state, raw_event.attempts) == (RawEventState.DEAD, 1)
    assert children_of(raw_event) == []
    return raw_event.process_error


def test_by_default_only_https_amazonaws_is_allowed_and_loopback_is_refused(server: PayloadServer) -> None:
    path = new_path()
    url = server.serve(path, sample("daily"))
    error = dead_with(url)
    assert error == (
        f"bad_data: s3_payload url's origin http://127.0.0.1:{port_of(server)} is not in AMY_S3_PAYLOAD_HOSTS"
    )
    assert path not in server.requests


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://terra-payloads.s3.amazonaws.com/x.json",  # plain http to the right host
        "https://terra-payloads.s3.amazonaws.com:8443/x.json",
        "https://amazonaws.com/x.json",
        "https://s3.amazonaws.com.attacker.example/x.json",
        "https://attacker-amazonaws.com/x.json",
    ],
)
def test_an_origin_not_listed_is_dead_lettered_without_a_request(url: str) -> None:
    assert dead_with(url).endswith("is not in AMY_S3_PAYLOAD_HOSTS")


def test_a_listed_name_that_resolves_to_loopback_is_refused(
    server: PayloadServer, settings: Any, resolver: dict[str, list[str]]
) -> None:
    settings.AMY_S3_PAYLOAD_HOSTS = [f"http://{NAME}:{port_of(server)}"]
    resolver[NAME] = ["127.0.0.1"]
    path = new_path()
    server.serve(path, sample("daily"))
    error = dead_with(f"http://{NAME}:{port_of(server)}{path}?X-Amz-Signature=s")
    assert error == (
        f"bad_data: s3_payload host {NAME} resolves to 127.0.0.1, a private, loopback or link-local "
        "address that AMY_S3_PAYLOAD_HOSTS does not list"
    )
    assert path not in server.requests


@pytest.mark.parametrize("answers", [["10.1.2.3"], ["169.254.169.254"], ["93.184.215.14", "192.168.0.9"], ["::1"]])
def test_a_name_with_any_non_public_address_is_refused(settings: Any, resolver: dict, answers: list[str]) -> None:
    settings.AMY_S3_PAYLOAD_HOSTS = [f"https://{NAME}"]
    resolver[NAME] = answers
    error = dead_with(f"https://{NAME}/x.json")
    assert error.startswith(f"bad_data: s3_payload host {NAME} resolves to ")
    assert error.endswith("AMY_S3_PAYLOAD_HOSTS does not list")


def test_a_listed_loopback_address_is_fetched_from_by_the_address_resolved_once(
    server: PayloadServer, settings: Any, resolver: dict[str, list[str]]
) -> None:
    # given: the name and the loopback address it resolves to are both listed
    port = port_of(server)
    settings.AMY_S3_PAYLOAD_HOSTS = [f"http://{NAME}:{port}", f"http://127.0.0.1:{port}"]
    resolver[NAME] = ["127.0.0.1"]
    path = new_path()
    server.serve(path, sample("daily"))
    # when
    _, raw_event = process(store(ping(f"http://{NAME}:{port}{path}?X-Amz-Signature=s")))
    # then: one lookup (the HTTP client connected to the checked address), the name as Host
    assert raw_event.state == RawEventState.SKIPPED
    assert [child.payload for child in children_of(raw_event)] == [sample("daily").decode()]
    assert resolver["lookups"] == [NAME]
    assert server.hosts[server.requests.index(path)] == f"{NAME}:{port}"


def test_a_redirect_is_refused_and_not_followed(server: PayloadServer, settings: Any) -> None:
    settings.AMY_S3_PAYLOAD_HOSTS = [server.origin]
    target = new_path()
    server.serve(target, sample("daily"))
    url = server.serve(new_path(), b"", status=302, headers={"location": server.url(target)})
    error = dead_with(url)
    assert error == "bad_data: s3_payload fetch from 127.0.0.1 answered a redirect (302), which is not followed"
    assert target not in server.requests


@pytest.mark.parametrize(
    ("origin", "url", "admitted"),
    [
        ("https://*.amazonaws.com", "https://terra-payloads.s3.eu-west-2.amazonaws.com/x", True),
        ("https://*.amazonaws.com", "https://b.s3.amazonaws.com:443/x", True),
        ("https://*.amazonaws.com", "https://amazonaws.com/x", False),
        ("https://*.amazonaws.com", "https://b.amazonaws.com.evil.example/x", False),
        ("https://*.amazonaws.com", "http://b.amazonaws.com/x", False),
        ("https://*.amazonaws.com", "https://b.amazonaws.com:444/x", False),
        ("https://payloads.example.com", "https://payloads.example.com/x", True),
        ("https://payloads.example.com", "https://a.payloads.example.com/x", False),
        ("http://[::1]:9000", "http://[::1]:9000/x", True),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9001/x", False),
    ],
)
def test_origins_match_scheme_host_and_port(origin: str, url: str, admitted: bool) -> None:
    import httpx

    target = httpx.URL(url)
    port = target.port or {"http": 80, "https": 443}[target.scheme]
    assert origin_parse(origin).admits(target.scheme, target.host, port) is admitted


@pytest.mark.parametrize("value", ["ftp://x.example.com", "https://x.example.com/path", "https://*.com", "nonsense"])
def test_a_malformed_origin_is_refused_by_manage_py_check(value: str, settings: Any) -> None:
    from django.core.checks import run_checks

    settings.AMY_S3_PAYLOAD_HOSTS = [value]
    assert [error.id for error in run_checks() if error.id == "ingest.E001"] == ["ingest.E001"]


def test_the_fetch_refuses_before_any_connection(settings: Any) -> None:
    from ingest.services.payload_fetch import payload_fetch

    settings.AMY_S3_PAYLOAD_HOSTS = ["https://*.amazonaws.com"]
    with pytest.raises(BadData, match="is not in AMY_S3_PAYLOAD_HOSTS"):
        payload_fetch("http://0x7f000001/latest")


# HTTPS: the connection goes to the checked address; the URL's name is the TLS server name ------


def self_signed(name: str, directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for `name`, and the certificate's path (the client's CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@pytest.fixture
def tls_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PayloadServer]:
    """An HTTPS payload server whose certificate names `request.param`, trusted as the only CA."""
    import certifi

    context, ca = self_signed(request.param, tmp_path)
    monkeypatch.setattr(certifi, "where", lambda: str(ca))
    payloads = PayloadServer(tls=context)
    payloads.start()
    yield payloads
    payloads.stop()


@pytest.mark.parametrize("tls_server", [NAME], indirect=True)
def test_https_connects_to_the_checked_address_and_verifies_the_urls_name(
    tls_server: PayloadServer, settings: Any, resolver: dict[str, list[str]]
) -> None:
    port = port_of(tls_server)
    settings.AMY_S3_PAYLOAD_HOSTS = [f"https://{NAME}:{port}", f"https://127.0.0.1:{port}"]
    resolver[NAME] = ["127.0.0.1"]
    path = new_path()
    tls_server.serve(path, sample("daily"))
    _, raw_event = process(store(ping(f"https://{NAME}:{port}{path}?X-Amz-Signature=s")))
    assert raw_event.state == RawEventState.SKIPPED
    assert [child.payload for child in children_of(raw_event)] == [sample("daily").decode()]
    assert (resolver["lookups"], tls_server.server_names) == ([NAME], [NAME])
    assert tls_server.hosts == [f"{NAME}:{port}"]


@pytest.mark.parametrize("tls_server", ["someone-else.amy-test.invalid"], indirect=True)
def test_https_to_an_address_whose_certificate_names_another_host_is_not_fetched(
    tls_server: PayloadServer, settings: Any, resolver: dict[str, list[str]]
) -> None:
    port = port_of(tls_server)
    settings.AMY_S3_PAYLOAD_HOSTS = [f"https://{NAME}:{port}", f"https://127.0.0.1:{port}"]
    resolver[NAME] = ["127.0.0.1"]
    path = new_path()
    tls_server.serve(path, sample("daily"))
    result, raw_event = process(store(ping(f"https://{NAME}:{port}{path}?X-Amz-Signature=s")))
    assert result.status == ProcessStatus.RETRY
    assert raw_event.process_error == f"TransientError: s3_payload fetch from {NAME} failed: ConnectError"
    assert tls_server.requests == []
