from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flotilla.localcluster.kubeconfig import render_kubeconfig, write_kubeconfig
from flotilla.localcluster.pki import ADMIN, SCHEDULER, ClusterPKI


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_client_certificates_name_user_and_groups_and_chain_to_the_ca(tmp_path: Path) -> None:
    authority = ClusterPKI(tmp_path)
    ca = load(authority.ca.cert)
    for identity in (ADMIN, SCHEDULER):
        cert = load(authority.client(identity).cert)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity.user
        groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert groups == list(identity.groups)
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


def test_serving_certificate_covers_ips_and_names(tmp_path: Path) -> None:
    authority = ClusterPKI(tmp_path)
    cert = load(authority.serving("apiserver", ["127.0.0.1", "localhost"]).cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_kubeconfig_points_at_server_with_client_certificate(tmp_path: Path) -> None:
    authority = ClusterPKI(tmp_path)
    pair = authority.client(ADMIN)
    doc = render_kubeconfig(
        cluster_name="c",
        server="https://127.0.0.1:6443",
        ca_file=authority.ca.cert,
        user=ADMIN.user,
        client=pair,
    )
    path = write_kubeconfig(tmp_path / "kubeconfig", doc)
    loaded = yaml.safe_load(path.read_text())
    assert loaded["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(authority.ca.cert),
    }
    assert loaded["users"][0]["user"]["client-certificate"] == str(pair.cert)
    assert loaded["current-context"] == "c"
