"""PII redaction as in SantaCoder (BigCode's regex pipeline): e-mail addresses, IP addresses and secret keys are
replaced by placeholders, each with its own false-positive rules.

- E-mails: a regex with left and right delimiters and a 2-63 letter TLD. Not e-mails: ``@decorator``, ``a@b``
  without a TLD, ``user@host:path`` and ``user@host/path`` (scp/ssh/URL host references such as
  ``git@github.com:owner/repo.git``), ``icon@2x.png`` asset names, and the reserved example domains (RFC 2606, which
  our own placeholders use, so a second pass changes nothing).
- IPs: IPv4 and IPv6 regexes; an address must contain a digit, not look like a date (``dd.mm.yy.x``), not look like a
  version (``x.x.x.x`` of 7 characters, or "version" or "section" within 100 characters) unless "dns" or "server" is
  within 100 characters, and parse with ``ipaddress``. Non-global addresses (private, loopback, link-local, reserved,
  multicast ...) and well-known public DNS servers are left alone. IPv6 needs 3 written groups, so slices such as
  ``x[2000::5]`` aren't taken.
- Keys: detect-secrets 1.5.0 with BigCode's 18 plugins and 4 heuristic filters, plus BigCode's hash rule. BigCode's
  gibberish check needs a model trained on a text corpus we can't download, so it is left out; in its place the
  entropy findings (any quoted random-looking string) must not be alphabets or counting sequences, hex ones not
  numbers, and hex ones are digests in a file about hashing (BigCode's file rule, which we keep to hex strings: at its
  threshold it skipped every key of a file under 50 lines that said "shape"). detect-secrets is slow (its Python
  plumbing runs every plugin on every line), so a pre-filter runs fast regexes over the whole text (for each plugin a
  part of its format; for the entropy plugins a quoted run as long as the entropy limit needs) and only the lines it
  flags are scanned. A key is replaced wherever it occurs in the file, as BigCode did; an entropy finding only as a
  whole token.

Placeholders are derived from a hash of (seed, kind, value): the same value always gets the same placeholder, and a
re-run gives byte-identical output.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
import re

from santacoder.data.curation.verdict import KEEP, Verdict, change

# --- e-mails ---------------------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])"  # not the tail of a longer token
    r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
    r"(?![\w@-]|\.\w|:[^\s'\"`]|/)"  # a longer domain, or a host followed by a path, is not an e-mail
)
_EMAIL_GATE = re.compile(r"@[A-Za-z0-9-]+\.[A-Za-z0-9]")  # cheap necessary part: most documents stop here
_NOT_PERSONAL_DOMAIN = re.compile(r"(?:^|\.)example\.(?:com|org|net)$|\.(?:example|test|invalid|localhost)$", re.I)
_RETINA = re.compile(r"\d(?:\.\d)?x\.")  # icon@2x.png, icon@1.5x.png

# --- IP addresses ----------------------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\w)")
# cheap necessary parts (they start with a literal, which regex searches fast): most documents stop here
_IPV4_GATE = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")
_IPV6_GATE = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")  # a compressed or a full 8-group address
_DATE = re.compile(r"(\d\d)\.(\d\d)\.\d\d\.")  # dd.mm.yy.x or mm.dd.yy.x
_PUBLIC_DNS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222",
        "208.67.220.220", "64.6.64.6", "64.6.65.6", "77.88.8.8", "77.88.8.1", "8.26.56.26", "8.20.247.20",
        "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001",
        "2620:fe::fe", "2620:fe::9", "2620:119:35::35", "2620:119:53::53", "2a02:6b8::feed:ff",
        "2a02:6b8:0:1::feed:ff", "2620:74:1b::1:1", "2620:74:1c::2:2",
    )
)  # fmt: skip


def _is_date(value: str) -> bool:
    m = _DATE.match(value)
    if not m:
        return False
    a, b = int(m[1]), int(m[2])
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


def _is_version(value: str, text: str, start: int, end: int) -> bool:
    """BigCode's x.x.x.x of 7 characters, and ours: "version" (or a spec's "section") within 100 characters; unless
    "dns" or "server" is within 100 characters."""
    context = text[max(0, start - 100) : end + 100].lower()
    if not (len(value) == 7 or "version" in context or "section" in context):
        return False
    return "dns" not in context and "server" not in context


def _ip_to_redact(value: str, text: str, start: int, end: int) -> bool:
    if not any(c.isdigit() for c in value):
        return False
    if ":" in value:
        if sum(1 for g in re.split(r":+", value) if g) < 3:  # slices, C++ scopes: x[1::2], A::B2
            return False
    elif _is_date(value) or _is_version(value, text, start, end):
        return False
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    return ip.is_global and not (ip.is_multicast or ip.is_reserved) and ip not in _PUBLIC_DNS


# --- keys ------------------------------------------------------------------------------------------------------------

# BigCode's set: the keyword-like plugins (BasicAuth, Keyword, PrivateKey) are left out.
_PLUGINS = [
    {"name": "ArtifactoryDetector"},
    {"name": "AWSKeyDetector"},
    {"name": "AzureStorageKeyDetector"},
    {"name": "Base64HighEntropyString", "limit": 4.5},
    {"name": "HexHighEntropyString", "limit": 3.0},
    {"name": "CloudantDetector"},
    {"name": "DiscordBotTokenDetector"},
    {"name": "GitHubTokenDetector"},
    {"name": "IbmCloudIamDetector"},
    {"name": "IbmCosHmacDetector"},
    {"name": "JwtTokenDetector"},
    {"name": "MailchimpDetector"},
    {"name": "NpmDetector"},
    {"name": "SendGridDetector"},
    {"name": "SlackDetector"},
    {"name": "SoftlayerDetector"},
    {"name": "StripeDetector"},
    {"name": "TwilioKeyDetector"},
]
# Setting filters_used replaces detect-secrets' defaults, so the allowlist pragma and, importantly, the verification
# filter (which would make network calls) are off, as in BigCode's run.
_FILTERS = [
    {"path": "detect_secrets.filters.heuristic.is_potential_uuid"},
    {"path": "detect_secrets.filters.heuristic.is_likely_id_string"},
    {"path": "detect_secrets.filters.heuristic.is_templated_secret"},
    {"path": "detect_secrets.filters.heuristic.is_sequential_string"},
]
_SETTINGS = {"plugins_used": _PLUGINS, "filters_used": _FILTERS}
_HASH_WORDS = ("sha", "md5", "hash", "byte")
_HASHY = re.compile(r"sha-?\d|md5|hash|digest|hmac|blake2", re.IGNORECASE)
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the line breaks of Python's universal newlines, which detect-secrets reads by


def _shortest(limit: float) -> int:
    """The shortest string whose entropy can pass ``limit``: n characters have an entropy of at most log2(n)."""
    return math.floor(2**limit) + 1


_B64 = r"A-Za-z0-9+/\\\-_="  # Base64HighEntropyString's charset: base64, url-safe base64 and, as it is written, "\\"
# The pre-filter: each plugin's format reduced to a part that regex finds fast (a literal, or a character class that
# is rare at the start), always a superset of what the plugin can report on a line (tests/test_curation_pii.py checks
# it against a full scan); a line is scanned with detect-secrets only if one of these matches on it.
_KEY_HINTS = [
    re.compile(r"AKC[a-zA-Z0-9]{10}|AP[\dA-F][a-zA-Z0-9]{8}"),  # Artifactory
    re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"),  # AWS key id; the secret is a quoted 40
    re.compile(r"AccountKey="),  # Azure
    re.compile(r"\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}"),  # Discord
    re.compile(r"gh[pousr]_"),  # GitHub
    re.compile(r"eyJ"),  # JWT
    re.compile(r"-us[0-9]"),  # Mailchimp
    re.compile(r":_authToken="),  # npm
    re.compile(r"SG\."),  # SendGrid
    re.compile(r"k_live_"),  # Stripe
    re.compile(r"AC[a-z0-9]{32}|SK[a-z0-9]{32}"),  # Twilio
    # Cloudant, IBM Cloud IAM, IBM COS HMAC and SoftLayer: 24 letters or 44-64 [\w-] characters right after an
    # assignment ("=", ":", ">", a space), a quote, or the "/" or ":" of their URLs (IGNORECASE as those plugins)
    re.compile(r"[=:> \"'/](?:[a-z]{24}|[a-z0-9_-]{44})", re.IGNORECASE),
    # the entropy plugins: a quoted run long enough to pass the limit (AWS's quoted 40-character secret is one too)
    re.compile(rf"['\"](?:[{_B64}]{{{_shortest(4.5)},}}|[0-9a-fA-F]{{{_shortest(3.0)},}})['\"]"),
]
_GITHUB = re.compile(r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}")
_SLACK = re.compile(r"xox[abposr]-|hooks\.slack\.com", re.IGNORECASE)  # slow to search: only after a casefold gate


def _hint_spans(text: str) -> list[tuple[int, int]]:
    hints = _KEY_HINTS
    folded = text.casefold()  # what IGNORECASE matches, as a gate
    if "xox" in folded or "hooks.slack.com" in folded:
        hints = [*hints, _SLACK]
    return [m.span() for pattern in hints for m in pattern.finditer(text)]


def _split_lines(text: str) -> tuple[list[str], list[int]]:
    starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    return _NEWLINE.split(text), starts


def _lines_of(spans: list[tuple[int, int]], starts: list[int]) -> list[int]:
    flagged = set()
    for start, end in spans:
        first = bisect.bisect_right(starts, start) - 1
        last = bisect.bisect_right(starts, max(start, end - 1)) - 1
        flagged.update(range(first, last + 1))
    return sorted(flagged)


def _steps(value: str) -> float:
    """The share of neighbouring characters one code point apart (a-b, 5-4, 9-0): alphabets and counting sequences
    that is_sequential_string misses, such as "abcdefghijklmnopqrstuvwxyz0123456789_" or "1234567890abcdef12345"."""
    pairs = list(zip(value, value[1:], strict=False))
    return sum(abs(ord(a) - ord(b)) == 1 or a + b in ("90", "09") for a, b in pairs) / max(len(pairs), 1)


def _is_number(value: str) -> bool:
    try:
        float(value)  # "152587890625e7" is hex-looking
        return True
    except ValueError:
        return False


def _not_a_key(value: str, kind: str, context: str, hashy: bool) -> bool:
    """Our false-positive rules on top of detect-secrets' (``context``: the finding's line and the two before it,
    lowercased, since a digest is often an argument on a continuation line). Known token formats are trusted; the
    entropy plugins, which take any quoted random-looking string, get the gibberish check's place."""
    if len(value) in (32, 40, 64) and any(word in context for word in _HASH_WORDS):
        return True  # BigCode's: a digest
    if kind == "Hex High Entropy String" and (hashy or _is_number(value)):
        return True  # a hex string in a file about hashing is a digest (BigCode's file rule, for hex strings only)
    # random strings have few steps: 1/8 of the pairs for hex, 1/32 for base64
    return kind.endswith("High Entropy String") and _steps(value) >= 0.4


def _is_hashy(lines: list[str]) -> bool:
    """BigCode skipped keys in files mentioning sha or hash on more than 2% of the lines; its threshold was 0 under 50
    lines (and "sha" matched "shape"), so we ask for 2 lines at least and for hash names."""
    hits = sum(1 for line in lines if _HASHY.search(line))
    return hits >= 2 and hits > 0.02 * len(lines)


def find_keys(text: str, prefilter: bool = True) -> dict[str, str]:
    """The secret values detect-secrets finds in ``text`` with BigCode's plugins and filters, less our false positives
    (see ``_not_a_key``), each with its plugin's secret type, in order of first finding. ``prefilter=False`` scans
    every line, as BigCode did."""
    from detect_secrets.core.scan import _process_line_based_plugins
    from detect_secrets.settings import transient_settings

    spans = _hint_spans(text) if prefilter else None
    if spans == []:
        return {}
    lines, starts = _split_lines(text)
    numbers = _lines_of(spans, starts) if prefilter else range(len(lines))
    scanned = [lines[i] for i in numbers]
    found: dict[str, str] = {}
    hashy = None
    # detect-secrets keeps plugins and filters in global settings: set them for this call only, and restore them.
    # _process_line_based_plugins is what scan_file runs on a file's lines (no eager search of unquoted strings, which
    # the public scan_line does); we give it the flagged lines, numbered 1.. in order.
    with transient_settings(_SETTINGS):
        for secret in _process_line_based_plugins(list(enumerate(scanned, 1)), filename="document"):
            i = numbers[secret.line_number - 1]
            values = [secret.secret_value]
            if secret.type == "GitHub Token":  # its regex's capturing group makes it report "ghp", not the token
                values = _GITHUB.findall(lines[i])
            if hashy is None and secret.type == "Hex High Entropy String":
                hashy = _is_hashy(lines)
            for value in values:
                context = "\n".join(lines[max(0, i - 2) : i + 1]).lower()
                if value not in found and not _not_a_key(value, secret.type, context, bool(hashy)):
                    found[value] = secret.type
    return found


# --- redaction -------------------------------------------------------------------------------------------------------


def _digest(seed: int, kind: str, value: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{kind}\0{value}".encode(), digest_size=32).digest(), "big")


def _chars(h: int, alphabet: str, n: int) -> str:
    out = []
    for _ in range(n):
        h, i = divmod(h, len(alphabet))
        out.append(alphabet[i])
    return "".join(out)


def placeholder(kind: str, value: str, seed: int = 0) -> str:
    """``kind`` is "email" (5 letters @example.com), "ip" (a private address of the value's family: 10.0.0.0/8 or
    fd00::/8) or "key" (32 characters of [a-z0-9])."""
    h = _digest(seed, kind, value)
    if kind == "email":
        return _chars(h, "abcdefghijklmnopqrstuvwxyz", 5) + "@example.com"
    if kind == "ip":
        if ":" in value:
            return str(ipaddress.IPv6Address((0xFD << 120) | (h & ((1 << 120) - 1))))
        return str(ipaddress.IPv4Address((10 << 24) | (h & 0xFFFFFF)))
    return _chars(h, "abcdefghijklmnopqrstuvwxyz0123456789", 32)


class PIIRedactor:
    """A curation stage: replaces e-mails, IP addresses and secret keys by placeholders (see the module's doc).
    Holds only its options, so it pickles; detect-secrets is imported and configured inside each call."""

    name = "pii"
    prefilter = True  # False scans every line with detect-secrets (slow; to check the pre-filter)

    def __init__(self, emails: bool = True, ips: bool = True, keys: bool = True, seed: int = 0):
        self.emails, self.ips, self.keys, self.seed = emails, ips, keys, seed

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of everything to redact, sorted, without overlaps (the longer span wins)."""
        found = []
        if self.keys:
            # every occurrence in the file, as BigCode; an entropy finding (a quoted string) only as a whole token, so
            # its digits inside a longer literal (0x1234567890abcdef) stay
            for value, kind in find_keys(text, self.prefilter).items():
                pattern = re.escape(value)
                if kind.endswith("High Entropy String"):
                    pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
                found += [(m.start(), m.end(), "key") for m in re.finditer(pattern, text)]
        if self.emails and _EMAIL_GATE.search(text):
            for m in _EMAIL.finditer(text):
                domain = m[1]
                if not _NOT_PERSONAL_DOMAIN.search(domain) and not _RETINA.match(domain):
                    found.append((m.start(), m.end(), "email"))
        if self.ips:
            for regex, gate in ((_IPV4, _IPV4_GATE), (_IPV6, _IPV6_GATE)):
                for m in regex.finditer(text) if gate.search(text) else ():
                    if _ip_to_redact(m[0], text, m.start(), m.end()):
                        found.append((m.start(), m.end(), "ip"))
        kept, end = [], -1
        for start, stop, kind in sorted(found, key=lambda s: (s[0], s[0] - s[1])):
            if start >= end:
                kept.append((start, stop, kind))
                end = stop
        return kept

    def decide(self, text: str, meta: dict) -> Verdict:
        spans = self.spans(text)
        if not spans:
            return KEEP
        out, counts, pos = [], {}, 0
        for start, end, kind in spans:
            out += [text[pos:start], placeholder(kind, text[start:end], self.seed)]
            counts[kind] = counts.get(kind, 0) + 1
            pos = end
        out.append(text[pos:])
        return change("".join(out), counts)
