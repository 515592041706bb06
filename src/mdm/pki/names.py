"""Distinguished names as the grid writes them, and OpenSSL's subject hash.

Grid software (VOMS ``.lsc`` files, gridmap files, ACLs) writes DNs in OpenSSL's "oneline"
slash form, RDNs in certificate (DER) order: ``/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor``.
MDM uses that form everywhere a DN is shown or compared as text, so an ACL entry copied from
``voms-proxy-info`` or ``openssl x509 -subject -nameopt compat`` matches.

``subject_hash`` is OpenSSL's ``X509_NAME_hash`` (the ``<hash>.0`` file names of an IGTF trust
directory, looked up by ``capath``): the first four bytes, little-endian, of the SHA-1 of the
name's *canonical* encoding. Canonical (OpenSSL ``x509_name_canon``): every string value is
converted to UTF8String, leading/trailing whitespace removed, inner runs of whitespace collapsed
to one space, ASCII letters lowercased; each RDN is DER-encoded as a SET and the SETs are
concatenated without the outer SEQUENCE. A test checks it against ``openssl x509 -hash``.
"""

from __future__ import annotations

import hashlib
import re

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from mdm.errors import UsageError

#: OpenSSL short names, as ``X509_NAME_oneline`` prints them.
_SHORT: dict[str, str] = {
    NameOID.COUNTRY_NAME.dotted_string: "C",
    NameOID.STATE_OR_PROVINCE_NAME.dotted_string: "ST",
    NameOID.LOCALITY_NAME.dotted_string: "L",
    NameOID.ORGANIZATION_NAME.dotted_string: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string: "OU",
    NameOID.COMMON_NAME.dotted_string: "CN",
    NameOID.DOMAIN_COMPONENT.dotted_string: "DC",
    NameOID.EMAIL_ADDRESS.dotted_string: "emailAddress",
    NameOID.SERIAL_NUMBER.dotted_string: "serialNumber",
    NameOID.USER_ID.dotted_string: "UID",
    NameOID.GIVEN_NAME.dotted_string: "GN",
    NameOID.SURNAME.dotted_string: "SN",
    NameOID.TITLE.dotted_string: "title",
    NameOID.STREET_ADDRESS.dotted_string: "street",
    NameOID.POSTAL_CODE.dotted_string: "postalCode",
    NameOID.DN_QUALIFIER.dotted_string: "dnQualifier",
}
_BY_SHORT: dict[str, ObjectIdentifier] = {v.lower(): ObjectIdentifier(k) for k, v in _SHORT.items()}
_BY_SHORT["email"] = NameOID.EMAIL_ADDRESS

# Universal tags of the string types OpenSSL canonicalises (ASN1_MASK_CANON).
_CANON_TAGS = {12, 19, 20, 22, 26, 28, 30}
_WS = " \t\n\r\f\v"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_RDN_START = re.compile(r"/(?=[A-Za-z][A-Za-z0-9.]*=)")


def dn_string(name: x509.Name) -> str:
    """*name* in OpenSSL slash form, e.g. ``/DC=org/DC=mdmtest/CN=MDM Test CA``.

    Multi-valued RDNs are joined with ``+`` as OpenSSL does; unknown attribute types appear as
    dotted OIDs.
    """
    parts = []
    for rdn in name.rdns:
        atvs = []
        for attr in rdn:
            key = _SHORT.get(attr.oid.dotted_string, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            atvs.append(f"{key}={value}")
        parts.append("+".join(atvs))
    return "/" + "/".join(parts) if parts else ""


def parse_dn(text: str) -> x509.Name:
    """The ``x509.Name`` for a slash-form DN (the inverse of ``dn_string`` for common names).

    Raises ``UsageError`` naming the part that is not ``KEY=value`` with a known KEY.
    """
    text = text.strip()
    if not text.startswith("/"):
        raise UsageError(f"a DN must start with '/', like /DC=org/CN=Name: {text!r}")
    rdns = []
    for part in _RDN_START.split(text)[1:]:
        atvs = []
        for atv in re.split(r"\+(?=[A-Za-z][A-Za-z0-9.]*=)", part):
            key, sep, value = atv.partition("=")
            if not sep or not value:
                raise UsageError(f"DN component {atv!r} is not KEY=value in {text!r}")
            oid = _BY_SHORT.get(key.lower())
            if oid is None and re.fullmatch(r"\d+(\.\d+)+", key):
                oid = ObjectIdentifier(key)
            if oid is None:
                raise UsageError(f"unknown DN attribute {key!r} in {text!r}")
            atvs.append(x509.NameAttribute(oid, value))
        rdns.append(x509.RelativeDistinguishedName(atvs))
    if not rdns:
        raise UsageError(f"empty DN: {text!r}")
    return x509.Name(rdns)


class _CanonAtv(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("value", core.Any)]  # noqa: RUF012


def _split_ws(value: str) -> str:
    # Collapse runs of OpenSSL's isspace() characters only (str.split() knows more, e.g. NBSP).
    out = []
    in_ws = False
    for ch in value.strip(_WS):
        if ch in _WS:
            if not in_ws:
                out.append(" ")
            in_ws = True
        else:
            out.append(ch)
            in_ws = False
    return "".join(out)


def canonical_encoding(name: x509.Name) -> bytes:
    """OpenSSL's canonical encoding of *name* (the input of ``X509_NAME_hash``)."""
    parsed = asn1_x509.Name.load(name.public_bytes())
    out = bytearray()
    for rdn in parsed.chosen:
        encoded = []
        for atv in rdn:
            raw = atv["value"].dump()
            value = core.load(raw)
            if value.tag in _CANON_TAGS and value.class_ == 0:
                text = value.contents.decode("latin-1") if value.tag == 20 else value.native
                canon = _split_ws(str(text)).translate(_ASCII_LOWER)
                new_value: core.Asn1Value = core.UTF8String(canon)
            else:
                new_value = value
            item = _CanonAtv({"type": atv["type"].dotted, "value": core.Any(new_value)})
            encoded.append(item.dump())
        body = b"".join(sorted(encoded))  # DER: SET OF elements in ascending encoded order
        out += _der_set(body)
    return bytes(out)


def _der_set(body: bytes) -> bytes:
    """DER SET (tag 0x31) around already-encoded, already-sorted elements."""
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return b"\x31" + length + body


def subject_hash(name: x509.Name) -> str:
    """OpenSSL ``X509_NAME_hash`` of *name* as 8 lowercase hex digits (``openssl x509 -hash``)."""
    digest = hashlib.sha1(canonical_encoding(name), usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


__all__ = ["canonical_encoding", "dn_string", "parse_dn", "subject_hash"]
