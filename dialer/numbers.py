"""Customer numbers: national or international input to E.164, or a sentence saying why not."""
import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, geocoder

MAX_INPUT = 32
BLOCKED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
}


class InvalidNumber(ValueError):
    """The input cannot be dialled; str() is the sentence for the agent."""


def country_name(region):
    """'FR' -> 'France', through phonenumbers' own geocoding data."""
    example = phonenumbers.example_number(region)
    return (example and geocoder.country_name_for_number(example, "en")) or region


def normalise(raw, default_region, allowed_countries):
    """Return the E.164 form of `raw`, or raise InvalidNumber with a plain sentence."""
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
        where = country_name(region) if region and region != "ZZ" else "any country"
        raise InvalidNumber(f"That isn't a valid number for {where}. Check the digits.")
    kind = BLOCKED_TYPES.get(phonenumbers.number_type(number))
    if kind:
        raise InvalidNumber(f"The dialer does not call {kind} numbers.")
    region = phonenumbers.region_code_for_number(number)
    if region not in allowed_countries:
        allowed = ", ".join(country_name(c) for c in allowed_countries)
        raise InvalidNumber(f"Calls to {country_name(region)} aren't allowed from this dialer (allowed: {allowed}).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display(e164):
    """A number as people read it, e.g. +44 20 7946 0000."""
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164, None),
                                          phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except NumberParseException:
        return e164
