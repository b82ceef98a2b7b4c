"""Customer numbers: national or international input to E.164 (+ extension), or a sentence saying why not."""
import functools
import importlib.util
import os
from typing import NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

MAX_INPUT = 32
EXTENSION_PAUSE = "ww"  # one second after the answer before the extension's tones, for the switchboard to listen

# phonenumbers' names for its number types, as the BLOCKED_NUMBER_TYPES setting spells them.
TYPE_NAMES = {value: name for name, value in vars(PhoneNumberType).items() if name.isupper()}
# Types that are a known toll-fraud route: the calls cost far more than they look, and the fraudster
# who rented the number is paid per minute (UK 070 "personal" and 076 pager numbers are the classics).
FRAUD_TYPES = ("PERSONAL_NUMBER", "PAGER", "PREMIUM_RATE", "SHARED_COST", "UAN")
TYPE_LABELS = {
    "PERSONAL_NUMBER": "personal (follow-me) numbers such as UK 070",
    "PAGER": "pager numbers such as UK 076",
    "PREMIUM_RATE": "premium-rate numbers",
    "SHARED_COST": "shared-cost numbers",
    "UAN": "UAN (universal access) numbers",
    "VOIP": "VoIP numbers",
    "TOLL_FREE": "freephone numbers",
    "MOBILE": "mobile numbers",
    "FIXED_LINE": "landline numbers",
    "FIXED_LINE_OR_MOBILE": "landline or mobile numbers",
    "VOICEMAIL": "voicemail access numbers",
    "UNKNOWN": "numbers of an unknown kind",
}
# Twilio's magic test numbers (TWILIO.md 1.6) are +1 500 "personal" numbers, but they never ring
# anyone: Twilio answers them with an error at once. The sandbox uses them to show those errors.
TWILIO_TEST_NUMBERS = frozenset({"+15005550001", "+15005550002", "+15005550003", "+15005550004"})


class InvalidNumber(ValueError):
    """The input cannot be dialled; str() is the sentence for the agent."""


class Dialable(NamedTuple):
    """A number the dialer may call: E.164, and the extension to key in once it answers (or None)."""
    number: str
    extension: str | None = None


@functools.cache
def _country_names():
    """Region code -> English country name, from phonenumbers' own locale table.

    `phonenumbers.geocoder` would give the same names but imports `phonenumbers.geodata`, whose
    package import loads every prefix's place names (~100 MB per worker). The locale table is one
    file of that package that needs none of it, so it is loaded from its file alone, once, when a
    sentence first needs a country name.
    """
    path = os.path.join(os.path.dirname(phonenumbers.__file__), "geodata", "locale.py")
    spec = importlib.util.spec_from_file_location("phonenumbers.geodata.locale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not put in sys.modules: only the English names are kept
    names = {}
    for region, by_language in module.LOCALE_DATA.items():
        name = by_language.get("en")
        while name and name.startswith("*"):  # "*aa": the same text as language "aa"
            name = by_language.get(name[1:])
        if name:
            names[region] = name
    return names


def country_name(region):
    """'FR' -> 'France'; a region the table lacks (AC, TA, XK) reads as its code."""
    return _country_names().get(region, region)


def blocked_sentence(type_name):
    """Why a number of this type is refused."""
    label = TYPE_LABELS.get(type_name, type_name.lower().replace("_", " ") + " numbers")
    if type_name in FRAUD_TYPES:
        return f"The dialer does not call {label}: they are a known route for toll fraud."
    return f"The dialer is set not to call {label}."


def normalise(raw, default_region, allowed_countries, blocked_types=FRAUD_TYPES):
    """Return the Dialable form of `raw`, or raise InvalidNumber with a plain sentence."""
    text = (raw or "").strip()
    if not text:
        raise InvalidNumber("Enter the customer's phone number.")
    if len(text) > MAX_INPUT:
        raise InvalidNumber(f"That is too long for a phone number ({len(text)} characters).")
    if not any(ch.isdigit() for ch in text):
        raise InvalidNumber("A phone number needs digits; that has none.")
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as error:
        if error.error_type == NumberParseException.TOO_LONG:
            raise InvalidNumber("That number has too many digits.") from None
        if error.error_type in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
            raise InvalidNumber("That number has too few digits.") from None
        if error.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidNumber("That country code doesn't exist. Start international numbers with + and the country code.") from None
        raise InvalidNumber("That isn't a phone number.") from None
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_country_code(number.country_code)
        where = country_name(region) if region and region not in ("ZZ", "001") else "any country"
        raise InvalidNumber(f"That isn't a valid number for {where}. Check the digits.")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    type_name = TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN")
    if type_name in blocked_types and e164 not in TWILIO_TEST_NUMBERS:
        raise InvalidNumber(blocked_sentence(type_name))
    region = phonenumbers.region_code_for_number(number)
    if region not in allowed_countries:
        allowed = ", ".join(country_name(c) for c in allowed_countries)
        where = (country_name(region) if region and region not in ("ZZ", "001")
                 else f"+{number.country_code} numbers (an international network, not a country)")
        raise InvalidNumber(f"Calls to {where} aren't allowed from this dialer (allowed: {allowed}).")
    # phonenumbers keeps at most 20 digits of extension, so "ww" + it fits SendDigits' 32 keys.
    return Dialable(e164, number.extension or None)


def send_digits(extension):
    """What Twilio keys in once the customer answers, to reach an extension (SendDigits)."""
    return EXTENSION_PAUSE + extension if extension else None


def display(e164, extension=None):
    """A number as people read it, e.g. +44 20 7946 0000 (ext. 99)."""
    text = _international(e164)
    return f"{text} ext. {extension}" if extension else text


@functools.lru_cache(maxsize=16384)  # ~70 µs each, 50 to a history page; a centre calls the same numbers again
def _international(e164):
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except NumberParseException:
        return e164
