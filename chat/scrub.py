"""Private details out of the text, each replaced by a typed placeholder (<phone>, <iban>, ...).

A model repeats what it was trained on, so a friend's number in a reply must never reach the pairs.
The placeholder keeps the sentence ("call me on <phone>") so that the model learns that a number
goes there, not which one. Each kind is found by the library made for it where one exists:

    phone      phonenumbers' PhoneNumberMatcher with --region as the hint (national forms of that
               country, international +CC forms of every country), then a safety net for numbers
               written in another country's national form (digits in a phone's shape)
    card       13-19 digits (spaces or dashes allowed) whose Luhn check digit holds (python-stdnum)
    iban       any country's IBAN, its mod-97 checksum verified (python-stdnum)
    id         national identifiers with check digits (python-stdnum): US SSN, Brazil CPF and CNPJ,
               Spain DNI and NIE, Italy codice fiscale, France NIR, Germany Steuer-ID, India Aadhaar
               and PAN, China RIC, UK NHS number, Canada SIN, Korea RRN, Mexico CURP, Japan My Number
    email      addresses, and the usual spelled-out forms ("ana dot silva at example dot com",
               "ana [at] example [dot] com", "ana(at)example.com")
    ip         IPv4 and IPv6 addresses the standard library's ipaddress accepts
    password   the word after "password is", "senha:", "Passwort:", "wifi pw=" and the like
    redacted   what the user lists with --redact=WORD,... or --redact_file=FILE (terms, re:PATTERNs)

Only the finders of candidates are patterns here; whether a candidate is a number of its kind is
decided by its checksum or by phonenumbers' metadata. Links are replaced before this, by
--replace_links. Every pattern is anchored so that it starts only where a run starts: a 1 MB message
of digits or dots is scanned in linear time.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from pathlib import Path

from gptlib.errors import UserError

KINDS = ("email", "iban", "card", "id", "ip", "phone", "password", "redacted")
INSTALL = "pip install -r requirements-chat.txt (phonenumbers, python-stdnum)"

_DASH = "\u2010-\u2015\u2212\u30fc\uff0d"  # the dashes phone numbers are written with (Japanese, typographic)
_TLD = (r"(?:com|org|net|edu|gov|int|mil|info|biz|io|co|me|eu|uk|de|fr|es|it|nl|pt|br|jp|cn|in|ru|au|ca|ch|at|be|"
        r"se|no|dk|fi|pl|mx|ar|cl|ie|nz|za|kr|tw|hk|sg|us|gr|tr|cz|hu|ro|il|ae|app|dev|xyz|online|email|mail)")
_AT = r"(?:\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*|\s+(?:at|arroba|chez)\s+|\s*@\s*)"
_DOT = r"(?:\s*[\[({<]\s*(?:dot|punto|ponto|point|punkt|\.)\s*[\])}>]\s*|\s+(?:dot|punto|ponto|point|punkt)\s+|\.)"
_WORD = r"[\w+-]{1,64}"
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
SPELLED_EMAIL = re.compile(rf"(?<![\w.+-])(?P<user>{_WORD}(?:{_DOT}{_WORD}){{0,4}})(?P<at>{_AT}){_WORD}(?:{_DOT}{_WORD}){{0,3}}"
                           rf"{_DOT}{_TLD}\b", re.IGNORECASE)
_SPELLED_DOT = re.compile(r"[\[({<]|\s(?:dot|punto|ponto|point|punkt)\s", re.IGNORECASE)
IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{1,4}){3,9}(?![\w])", re.IGNORECASE)
CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PASSWORD = re.compile(r"\b(?:password|passwort|passwd|pwd|pw|senha|contrase[ñn]a|mot de passe|wachtwoord|kennwort|"
                      r"wifi key|wi-fi key|wlan-schlüssel|wifi code|pin)\b"
                      r"(?:\s*(?:is|ist|é|es|est|=|:|：)\s*)+(?!<[a-z]+>)(?P<secret>[^\s,;]{3,64})", re.IGNORECASE)
# A safety net after phonenumbers: 7-15 digits in a phone's shape, written in any country's national
# form (the matcher knows the national forms of the --region country only). Dates, amounts and
# decimals are left alone, and so is a plain number of fewer than 9 digits.
PHONE_SHAPE = re.compile(rf"(?<![\w+])\+?[(（]?\d[\d \t().（）{_DASH}-]{{5,40}}\d(?!\w)")
NOT_PHONE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,3}(?:[.,]\d{3})+|\d+[.,]\d+"
                       r"|(?:1[89]|20)\d{2}\s*[-–]\s*(?:1[89]|20)\d{2}")  # the one addition since 0.9.0: years, 1999-2004
# Digits left beside a placeholder, in a phone's shape: what a match inside a longer number (an ID,
# an IP address) left of it. They join the placeholder (found by the fuzz tests: "000 0000::").
_NEXT_TO = "|".join(f"(?<=<{kind}>)" for kind in ("iban", "card", "id", "ip", "phone"))
_BEFORE = "|".join(f"<{kind}>" for kind in ("iban", "card", "id", "ip", "phone"))
LEFTOVER = re.compile(rf"(?:{_NEXT_TO})[ \t().{_DASH}-]*\d+(?:[ \t().{_DASH}-]+\d+)*"
                      rf"|(?<![\w+().{_DASH}-])(?<!\d[ \t])\+?\d+(?:[ \t().{_DASH}-]+\d+)*[ \t().{_DASH}-]*(?={_BEFORE})")
# National identifiers in their written forms, each checked by its python-stdnum module.
IDS = (
    (r"\d{3}-\d{2}-\d{4}", "us.ssn"), (r"\d{3}\.\d{3}\.\d{3}-\d{2}", "br.cpf"),
    (r"\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}", "br.cnpj"), (r"\d{8}-?[A-Z]", "es.dni"), (r"[XYZ]-?\d{7}-?[A-Z]", "es.nie"),
    (r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]", "it.codicefiscale"), (r"[12](?: ?\d{2}){2} ?\d[\dAB](?: ?\d{3}){2} ?\d{2}", "fr.nir"),
    (r"\d{2} ?\d{3} ?\d{3} ?\d{3}", "de.idnr"), (r"\d{4} ?\d{4} ?\d{4}", "in_.aadhaar"), (r"[A-Z]{5}\d{4}[A-Z]", "in_.pan"),
    (r"\d{17}[\dX]", "cn.ric"), (r"\d{3} ?\d{3} ?\d{4}", "gb.nhs"), (r"\d{3}[ -]?\d{3}[ -]?\d{3}", "ca.sin"),
    (r"\d{6}-\d{7}", "kr.rrn"), (r"[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z\d]\d", "mx.curp"), (r"\d{4} ?\d{4} ?\d{4}", "jp.in_"),
)
# The numbers whose check digit is all that tells them from a phone number (1 in 10 or 11 of any
# digits pass) only count as identifiers when a phone they are not.
_WEAK_IDS = {"gb.nhs", "ca.sin", "de.idnr", "jp.in_", "in_.aadhaar"}


def load_libraries():
    """phonenumbers and python-stdnum, or one line saying how to install them."""
    try:
        import phonenumbers
        import stdnum  # noqa: F401
    except ImportError:
        raise UserError(f"scrubbing private details (on by default) needs two small libraries: {INSTALL}; "
                        "or turn it off with --scrub_private=false.") from None
    return phonenumbers


def redaction_terms(words: str, file: str) -> list[re.Pattern]:
    """--redact=WORD,... and --redact_file=FILE (one term a line; re:PATTERN for a regular expression;
    # for a comment) as patterns. A term matches whole words, in any case, with any spaces between its words."""
    lines = [(f"--redact term {i}", w) for i, w in enumerate(words.split(","), 1)]
    if file:
        try:
            lines += [(f"--redact_file line {i}", line)
                      for i, line in enumerate(Path(file).read_text(encoding="utf-8").splitlines(), 1)]
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"--redact_file={file}: cannot be read ({getattr(err, 'strerror', None) or err}).") from None
    patterns = []
    for where, line in lines:
        term = line.strip()
        if not term or term.startswith("#"):
            continue
        if term.startswith("re:"):
            try:
                patterns.append(re.compile(term[3:], re.IGNORECASE))
            except re.error as err:
                raise UserError(f"{where}: not a regular expression ({err}).") from None  # the term itself is private
            continue
        words_in = [re.escape(part) for part in term.split()]
        patterns.append(re.compile(r"(?<!\w)" + r"\s+".join(words_in) + r"(?!\w)", re.IGNORECASE))
    return patterns


class Scrubber:
    """Replaces private details with typed placeholders and counts each kind in counts["scrubbed KIND"]."""

    def __init__(self, region: str, redact: list[re.Pattern], counts: Counter, scrub: bool = True, drop: bool = False):
        self.region, self.redact, self.counts, self.scrub, self.drop = region.upper() or "ZZ", redact, counts, scrub, drop
        self.phonenumbers = load_libraries() if scrub else None
        if scrub and region and self.region not in self.phonenumbers.SUPPORTED_REGIONS:
            raise UserError(f"--region={region!r} is not a country phonenumbers knows; give its two-letter ISO code "
                            "(PT, US, GB, DE, JP, BR, IN ...).")
        if scrub:
            import importlib

            self.ids = [(re.compile(rf"(?<![\w.-]){pattern}(?![\w]|[.-]\w)"), name,
                         importlib.import_module(f"stdnum.{name}")) for pattern, name in IDS]
            from stdnum import iban, luhn
            self.iban, self.luhn = iban, luhn
            self.regions = sorted(self.phonenumbers.SUPPORTED_REGIONS)

    def __call__(self, text: str) -> str | None:
        """The text with each detail replaced; None when --redact_drop drops it whole."""
        if self.scrub:
            text = self._sub("email", EMAIL, text)
            text = self._sub("email", SPELLED_EMAIL, text, _spelled_email)
            text = self._sub("password", PASSWORD, text, lambda m: m.group()[:m.start("secret") - m.start()] + "<password>")
            if sum(char.isdigit() for char in text) >= 4:  # the rest hold 4 digits or more: most messages have fewer
                text = self._numbers(text)
        for pattern in self.redact:
            if self.drop and pattern.search(text):
                return None
            text = self._sub("redacted", pattern, text)
        return text

    def _numbers(self, text: str) -> str:
        text = self._sub("iban", IBAN, text, _longest(self.iban.is_valid, "<iban>"))
        for pattern, name, module in self.ids:
            if name not in _WEAK_IDS:
                text = self._sub("id", pattern, text, self._checked(module.is_valid, "<id>"))
        text = self._sub("card", CARD, text, _longest(_is_card(self.luhn), "<card>"))
        text = self._sub("ip", IPV4, text, self._checked(_is_ip, "<ip>"))
        text = self._sub("ip", IPV6, text, self._checked(_is_ip, "<ip>"))
        text = self._matched_phones(text)
        for pattern, name, module in self.ids:
            if name in _WEAK_IDS:
                text = self._sub("id", pattern, text, self._checked(lambda s, m=module: m.is_valid(s) and not self._is_phone(s), "<id>"))
        text = self._sub("phone", PHONE_SHAPE, text, self._checked(_phone_shaped, "<phone>"))
        return LEFTOVER.sub(_leftover, text) if "<" in text else text

    def _matched_phones(self, text: str) -> str:
        pn = self.phonenumbers
        found = [(m.start, m.end) for m in pn.PhoneNumberMatcher(text, self.region, leniency=pn.Leniency.VALID)]
        for start, end in reversed(found):
            text = text[:start] + "<phone>" + text[end:]
        self.counts["scrubbed phone"] += len(found)
        return text

    def _is_phone(self, candidate: str) -> bool:
        """Whether the digits are a valid phone number in some country (the --region one first)."""
        pn = self.phonenumbers
        for region in [self.region, *self.regions]:
            try:
                if pn.is_valid_number(pn.parse(candidate, region)):
                    return True
            except pn.NumberParseException:
                continue
        return False

    def _checked(self, is_valid, placeholder: str):
        return lambda match: placeholder if is_valid(match.group()) else None

    def _sub(self, kind: str, pattern: re.Pattern, text: str, replace=None) -> str:
        if replace is None:
            replace = lambda match: f"<{kind}>"
        replaced = 0

        def one(match: re.Match) -> str:
            nonlocal replaced
            new = replace(match)
            if new is None:
                return match.group()
            replaced += 1
            return new
        text = pattern.sub(one, text)
        self.counts[f"scrubbed {kind}"] += replaced
        return text


def _longest(is_valid, placeholder: str):
    """The placeholder for the longest start of the match, cut at a space or dash, that is valid:
    "DE89 3704 0044 0532 0130 00 OK" is an IBAN and a word."""
    def replace(match: re.Match):
        candidate = match.group()
        cuts = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] in " -"]
        for cut in cuts:
            if is_valid(candidate[:cut]):
                return placeholder + candidate[cut:]
        return None
    return replace


def _spelled_email(match: re.Match) -> str | None:
    """"dora.lima at example.com" is an address; "I work at google.com" is not: a bare "at" before a
    dotted domain counts only after a name with a dot, underscore or digit in it."""
    bare_at = match.group("at").strip().lower() == "at"
    if bare_at and not _SPELLED_DOT.search(match.group()) and not re.search(r"[._\d]", match.group("user")):
        return None
    return "<email>"


def _is_card(luhn):
    def is_card(candidate: str) -> bool:
        digits = re.sub(r"[ -]", "", candidate)
        return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn.is_valid(digits)
    return is_card


def _leftover(match: re.Match) -> str:
    return "" if sum(char.isdigit() for char in match.group()) >= 3 else match.group()


def _is_ip(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return address.version == 4 or candidate.count(":") >= 3 or "::" in candidate


def _phone_shaped(candidate: str) -> bool:
    """What the hand-written rule of earlier versions scrubbed, kept as a net so that nothing it caught leaks."""
    digits = sum(char.isdigit() for char in candidate)
    if not 7 <= digits <= 15 or NOT_PHONE.fullmatch(candidate):
        return False  # a date, an amount, a decimal
    return candidate[0] == "+" or digits >= 9 or bool(re.search(rf"[ ().（）{_DASH}-]", candidate))
