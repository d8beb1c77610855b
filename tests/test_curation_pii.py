"""PII redaction: one crafted document per rule and per edge (e-mails, IPs, keys), the pre-filter against a full
detect-secrets scan, determinism and pickling."""

from __future__ import annotations

import base64
import ipaddress
import os
import pickle
import random
import re
import string
import tempfile

import pytest

from santacoder.data.curation.pii import PIIRedactor, find_keys, placeholder
from santacoder.data.curation.verdict import KEEP

PY = {"language": "python"}
RNG = random.Random(1234)
UP, LOW, DIG = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UP + LOW + DIG
HEX = "0123456789abcdef"


def rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


AWS_ID = "AKIA" + rand(UP + DIG, 16)
AWS_SECRET = rand(ALNUM + "+/", 40)
GITHUB = "ghp_" + rand(ALNUM, 36)


def redact(text: str, **options) -> tuple[str | None, dict[str, int]]:
    verdict = PIIRedactor(**options).decide(text, PY)
    assert verdict.removed is None
    return verdict.text, verdict.changes


def assert_kept(text: str, **options) -> None:
    verdict = PIIRedactor(**options).decide(text, PY)
    assert verdict == KEEP and verdict.text is None, verdict


# --- e-mails ---------------------------------------------------------------------------------------------------------


def test_emails_in_strings_get_one_placeholder_per_address():
    text = 'OWNER = "jane.doe@gmail.com"\nCC = ["jane.doe@gmail.com", "bob+ci@corp.co.uk"]\n'
    new, changes = redact(text)
    assert changes == {"email": 3}
    found = re.findall(r"[a-z]{5}@example\.com", new)
    assert len(found) == 3 and found[0] == found[1] != found[2]
    assert "gmail" not in new and "corp" not in new
    assert new == text.replace("jane.doe@gmail.com", found[0]).replace("bob+ci@corp.co.uk", found[2])


@pytest.mark.parametrize(
    "text",
    [
        "@property\ndef name(self):\n    return self._name\n",  # a decorator
        'who = "foo@bar"\n',  # no TLD
        "y = a @ b.T\nz = a@b.T\n",  # matrix products (a 1-letter TLD is none)
        'url = "git@github.com:owner/repo.git"\n',  # scp-style host reference, not a mailbox
        'url = "ssh://git@github.com/owner/repo.git"\n',
        'icon = "images/logo@2x.png"\n',  # retina asset name
        'who = "someone@example.com"  # reserved example domain, and our placeholders\n',
    ],
)
def test_not_emails_are_kept(text):
    assert_kept(text)


# --- IP addresses ----------------------------------------------------------------------------------------------------


def test_public_ipv4_is_redacted_with_a_private_address():
    new, changes = redact('HOST = "93.184.216.34"  # and again: 93.184.216.34:8080\n')
    assert changes == {"ip": 2}
    (replacement,) = set(re.findall(r"\d+\.\d+\.\d+\.\d+", new))
    assert ipaddress.ip_address(replacement).is_private and replacement.startswith("10.")
    assert f"{replacement}:8080" in new


@pytest.mark.parametrize(
    "text",
    [
        'a = "192.168.1.1"\nb = "10.0.0.1"\nc = "127.0.0.1"\nd = "0.0.0.0"\ne = "255.255.255.255"\n',
        'resolvers = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "2001:4860:4860::8888"]\n',  # public DNS servers
        'mcast = "224.0.0.251"\n',  # multicast (mDNS), not a host
        'version = "1.2.3.4"\n',  # x.x.x.x of 7 characters
        "__version__ = '2.0.1.0'\n",
        'VERSION = "51.20.30.40"  # "version" nearby\n',
        'build = "2021.10.12.1"\n',  # not an address at all
        'released = "12.10.20.21"  # dd.mm.yy.x\n',
        'oid = "1.3.6.1.4.1.311"\n',  # more than 4 parts
        "# see section 8.2.4.44 of the spec\n",
        'lo = "::1"\nll = "fe80::1"\nula = "fd12:3456:789a::1"\n',
        "x = a[1::2]\ny = b[2000::5]\nusing std::vector;\n",  # slices and C++ scopes
        'mac = "00:1a:2b:3c:4d:5e:6f:70"\n',  # 8 byte groups parse, but as reserved ::/8
    ],
)
def test_not_public_addresses_are_kept(text):
    assert_kept(text)


def test_version_like_address_near_dns_or_server_is_redacted():
    new, changes = redact('dns_server = "1.2.3.4"\n')
    assert changes == {"ip": 1} and "1.2.3.4" not in new


def test_public_ipv6_is_redacted_with_a_unique_local_address():
    new, changes = redact('upstream = "2607:f8b0:4005:80a::200e"\nlo = "::1"\n')
    assert changes == {"ip": 1}
    replacement = re.search(r'upstream = "([0-9a-f:]+)"', new)[1]
    assert ipaddress.IPv6Address(replacement) in ipaddress.IPv6Network("fd00::/8")
    assert 'lo = "::1"' in new


# --- keys ------------------------------------------------------------------------------------------------------------


def test_aws_key_pair_is_redacted():
    text = f'aws_access_key_id = "{AWS_ID}"\naws_secret_access_key = "{AWS_SECRET}"\n'
    new, changes = redact(text)
    assert changes == {"key": 2}
    assert AWS_ID not in new and AWS_SECRET not in new
    assert re.fullmatch(r'aws_access_key_id = "[a-z0-9]{32}"\naws_secret_access_key = "[a-z0-9]{32}"\n', new)


def test_github_token_is_redacted_everywhere_in_the_file():
    text = f'TOKEN = {GITHUB}\n# curl -H "Authorization: token {GITHUB}"\n'
    new, changes = redact(text)
    assert changes == {"key": 2} and GITHUB not in new
    assert new.count(placeholder("key", GITHUB)) == 2


def test_entropy_finding_is_replaced_only_as_a_whole_token():
    salt = "8f3a9c2e7b1d4f60"
    new, changes = redact(f'SALT = "{salt}"\nMASK = 0x{salt}\n')
    assert changes == {"key": 1} and f"MASK = 0x{salt}\n" in new


@pytest.mark.parametrize(
    "text",
    [
        'request_id = "123e4567-e89b-12d3-a456-426614174000"\n',  # a UUID
        'sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"\n',  # a digest
        'password = "${PASSWORD}"\napi_key = "{{ api_key }}"\n',  # templated
        'CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"\nB32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"\n',  # alphabets
        'assert f"{big:x}" == "1234567890abcdef12345"\n',  # a counting sequence
        'x = Decimal("152587890625e7")\n',  # a number
    ],
)
def test_not_keys_are_kept(text):
    assert_kept(text)


def test_hex_strings_in_a_file_about_hashing_are_digests():
    digests = [rand(HEX, 32) for _ in range(3)]
    checks = [f'assert hashlib.md5(b"{i}").hexdigest() == (\n    "{d}")\n' for i, d in enumerate(digests)]
    assert_kept("import hashlib\n\n" + "".join(checks))
    assert find_keys(f'salt = "{digests[0]}"\n')  # the same string alone is a key


# --- the pre-filter never hides a finding -------------------------------------------------------------------------

JWT = ".".join(
    [base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("="),
     base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"Ann"}').decode().rstrip("="),
     rand(ALNUM, 43)]
)  # fmt: skip
KEY_LINES = [
    f'artifactory_token = "AKC{rand(ALNUM, 60)}"',
    f"password: AP6{rand(ALNUM, 20)}",
    f"key_id = {AWS_ID}",
    f"aws_secret_key = '{AWS_SECRET}\"",
    f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={rand(ALNUM + '+/', 86)}==;",
    f"blob = '{rand(ALNUM + '+/', 40)}'",
    f'salt = "{rand(HEX, 24)}"',
    f"cloudant_password = {rand(HEX, 64)}",
    f"cloudant_apikey: '{rand(LOW, 24)}'",
    f"url = https://acct:{rand(LOW, 24)}@acct.cloudant.com",
    f"bot = M{rand(ALNUM, 23)}.{rand(ALNUM, 6)}.{rand(ALNUM, 27)}",
    f"tok = {GITHUB}",
    f"ibm_cloud_iam_api_key: {rand(ALNUM + '_-', 44)}",
    f"cos_hmac_secret_access_key = {rand(HEX, 48)}",
    f"auth = {JWT}",
    f"mc = {rand(HEX, 32)}-us12",
    f"//registry.npmjs.org/:_authToken=npm_{rand(ALNUM, 36)}",
    f"SG.{rand(ALNUM, 22)}.{rand(ALNUM, 43)}",
    f"token XOXB-{rand(DIG, 11)}-{rand(DIG, 12)}-{rand(LOW + DIG, 24)}",
    f"https://hooks.slack.com/services/T{rand(UP + DIG, 8)}/B{rand(UP + DIG, 8)}/{rand(ALNUM, 24)}",
    f"softlayer_api_key = {rand(LOW + DIG, 64)}",
    f"https://api.softlayer.com/soap/v3/{rand(LOW + DIG, 64)}",
    f"stripe.api_key = sk_live_{rand(ALNUM, 24)}",
    f"sid = AC{rand(LOW + DIG, 32)}",
    f"key = SK{rand(LOW + DIG, 32)}",
    "name = 'a quoted string of words with spaces'",
    "x = compute_something_with_a_very_long_identifier_name_of_more_than_44_chars(1)",
]


def test_prefilter_finds_what_a_full_scan_finds():
    types = set()
    for line in KEY_LINES:
        full = find_keys(line, prefilter=False)
        assert find_keys(line) == full, line
        types.update(full.values())
    assert len(types) == 18  # every plugin reported something
    document = "\n".join(KEY_LINES) + "\n"
    assert find_keys(document) == find_keys(document, prefilter=False)


def test_in_memory_scan_matches_bigcodes_temporary_file_scan():
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import transient_settings

    from santacoder.data.curation.pii import _SETTINGS

    document = "\n".join(KEY_LINES) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "document.txt")
        with open(path, "w") as f:
            f.write(document)
        secrets = SecretsCollection()
        with transient_settings(_SETTINGS):
            secrets.scan_file(path)
    values = {s.secret_value for found in secrets.data.values() for s in found}
    # detect-secrets' GitHub regex has a capturing group: it reports "ghp", where we take the whole token
    assert values - {"ghp"} | {GITHUB} == set(find_keys(document))


# --- the stage -------------------------------------------------------------------------------------------------------


MIXED = f'''"""Deploy helper. Maintainer: Jane Roe <jane.roe@corp-mail.com>"""

HOST = "93.184.216.34"
LOCAL = "127.0.0.1"
TOKEN = "{GITHUB}"
'''


def test_changes_count_each_kind():
    new, changes = redact(MIXED)
    assert changes == {"email": 1, "ip": 1, "key": 1}
    assert redact(MIXED, emails=False)[1] == {"ip": 1, "key": 1}
    assert redact(MIXED, ips=False, keys=False)[1] == {"email": 1}
    assert "127.0.0.1" in new and new.count("\n") == MIXED.count("\n")


def test_no_pii_keeps_the_document():
    assert_kept('"""Nothing personal."""\n\n\ndef add(a, b):\n    return a + b\n')
    assert_kept("")


def test_redaction_is_deterministic_and_seeded():
    first = PIIRedactor().decide(MIXED, PY)
    again = pickle.loads(pickle.dumps(PIIRedactor())).decide(MIXED, PY)  # as in a datatrove worker
    assert first == again
    assert PIIRedactor(seed=1).decide(MIXED, PY).text != first.text


def test_detect_secrets_settings_are_restored():
    from detect_secrets.settings import default_settings, get_settings

    before = get_settings().json()
    redact(MIXED)
    assert get_settings().json() == before
    with default_settings():  # someone else's settings, active around our call
        theirs = get_settings().json()
        redact(MIXED)
        assert get_settings().json() == theirs
