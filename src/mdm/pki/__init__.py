"""X.509 identity for MDM (layer 1): test PKI, DNs, proxy chains, VOMS ACs, TLS contexts.

* ``ca``: a test/demo CA, host/user/VOMS certificates, IGTF trust dirs, plain RFC 3820 proxies.
* ``names``: slash-form DNs (``/DC=org/DC=mdmtest/CN=...``) and OpenSSL's subject hash.
* ``chain``: proxy detection, the end-entity certificate, trust directory, chain checks.
* ``voms``: VOMS attribute certificates, verified before any FQAN is believed.
* ``tls``: server/client SSL contexts, the verified peer chain, ``identity_from_chain``.

See docs/identity.md for what is verified and what is not (yet).
"""

from __future__ import annotations

from mdm.pki.ca import DEFAULT_CA_DN, CertificateAuthority, Credential, install_ca, make_proxy
from mdm.pki.chain import TrustStore, VerifiedChain, is_proxy, load_pem_certificates, verify_chain
from mdm.pki.names import dn_string, parse_dn, subject_hash
from mdm.pki.tls import (
    client_ssl_context,
    httpx_client,
    identity_from_chain,
    identity_from_file,
    peer_chain,
    server_ssl_context,
)
from mdm.pki.voms import VomsAttributes, voms_attributes

__all__ = [
    "DEFAULT_CA_DN",
    "CertificateAuthority",
    "Credential",
    "TrustStore",
    "VerifiedChain",
    "VomsAttributes",
    "client_ssl_context",
    "dn_string",
    "httpx_client",
    "identity_from_chain",
    "identity_from_file",
    "install_ca",
    "is_proxy",
    "load_pem_certificates",
    "make_proxy",
    "parse_dn",
    "peer_chain",
    "server_ssl_context",
    "subject_hash",
    "verify_chain",
    "voms_attributes",
]
