"""Customer numbers: fraud-route types refused with a sentence, extensions kept, country names without the geocoder."""
import os
import subprocess
import sys

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from dialer import numbers

from .test_dialing import place

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = ["GB", "IE", "US", "CA"]
SENTENCES = {
    "PERSONAL_NUMBER": "does not call personal (follow-me) numbers",
    "PAGER": "does not call pager numbers",
    "PREMIUM_RATE": "does not call premium-rate numbers",
    "SHARED_COST": "does not call shared-cost numbers",
    "UAN": "does not call UAN (universal access) numbers",
}


def examples(type_names, regions):
    """phonenumbers' own example number of each type in each region that has one, in E.164."""
    for name in type_names:
        for region in regions:
            example = phonenumbers.example_number_for_type(region, getattr(PhoneNumberType, name))
            if example:
                yield pytest.param(name, phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164),
                                   id=f"{name}-{region}")


@pytest.mark.parametrize("type_name, number", list(examples(numbers.FRAUD_TYPES, ALLOWED + ["DE", "FR", "AU"])))
def test_every_fraud_route_type_is_refused_with_its_sentence(type_name, number):
    with pytest.raises(numbers.InvalidNumber) as refused:
        numbers.normalise(number, "GB", ALLOWED)
    assert SENTENCES[type_name] in str(refused.value)
    assert "toll fraud" in str(refused.value)


@pytest.mark.parametrize("typed, sentence", [
    ("070 1234 5678", SENTENCES["PERSONAL_NUMBER"]),
    ("07640 123456", SENTENCES["PAGER"]),
    ("076 0012 3456", SENTENCES["PAGER"]),
    ("0909 879 0000", SENTENCES["PREMIUM_RATE"]),
    ("0871 123 4567", SENTENCES["PREMIUM_RATE"]),
    ("055 1234 5678", SENTENCES["UAN"]),
    ("+353 1850 123 456", SENTENCES["SHARED_COST"]),
    ("+1 900 234 5678", SENTENCES["PREMIUM_RATE"]),
])
def test_an_agent_typing_a_fraud_route_number_gets_422_the_sentence_and_no_call(app, client, auth, db, typed, sentence):
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, typed)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert sentence in html and 'role="alert"' in html
    assert db["calls"].count == 0
    assert app.extensions["sandbox"].calls == {}


def test_isle_of_man_mobiles_on_07624_are_mobiles_not_pagers():
    assert numbers.normalise("07624 123456", "GB", ["GB", "IM"]) == ("+447624123456", None)
    with pytest.raises(numbers.InvalidNumber, match="Calls to Isle Of Man aren't allowed"):
        numbers.normalise("07624 123456", "GB", ["GB"])  # refused for its country, not as a pager


@pytest.mark.parametrize("typed, code", [("+881 612 345 678", "881"), ("+800 1234 5678", "800")])
def test_a_number_of_an_international_network_is_refused_by_its_code_not_a_region_code(typed, code):
    with pytest.raises(numbers.InvalidNumber) as refused:
        numbers.normalise(typed, "GB", ["GB"])
    assert str(refused.value) == (f"Calls to +{code} numbers (an international network, not a country) aren't "
                                  "allowed from this dialer (allowed: United Kingdom).")


@pytest.mark.parametrize("blocked, typed, refused", [
    (["MOBILE"], "07400 123456", "The dialer is set not to call mobile numbers."),
    (["MOBILE"], "070 1234 5678", None),  # personal numbers dialled when the setting says so
    ([], "0909 879 0000", None),
    (["VOIP"], "056 1234 5678", "The dialer is set not to call VoIP numbers."),
])
def test_the_blocked_types_are_a_setting(blocked, typed, refused):
    if refused is None:
        assert numbers.normalise(typed, "GB", ALLOWED, blocked).number.startswith("+44")
    else:
        with pytest.raises(numbers.InvalidNumber) as error:
            numbers.normalise(typed, "GB", ALLOWED, blocked)
        assert str(error.value) == refused


@pytest.mark.parametrize("app_config", [{"BLOCKED_NUMBER_TYPES": "pager, uan"}])
def test_blocked_types_from_the_environment_are_read_as_a_list(app):
    assert app.config["BLOCKED_NUMBER_TYPES"] == ["PAGER", "UAN"]


@pytest.mark.parametrize("number", sorted(numbers.TWILIO_TEST_NUMBERS))
def test_twilios_test_numbers_are_not_refused_as_personal_numbers(number):
    # They never ring anyone (Twilio answers them with an error), and the sandbox shows those errors.
    assert numbers.normalise(number, "GB", ALLOWED) == (number, None)


@pytest.mark.parametrize("typed, number, extension", [
    ("020 7946 0000;ext=99", "+442079460000", "99"),
    ("020 7946 0000 ext. 5", "+442079460000", "5"),
    ("020 7946 0000 x123", "+442079460000", "123"),
    ("020 7946 0000 extension 42", "+442079460000", "42"),
    ("020 7946 0000,7", "+442079460000", "7"),
    ("+1 202 555 0100 x 4321", "+12025550100", "4321"),
    ("020 7946 0000", "+442079460000", None),
])
def test_an_extension_is_kept_beside_the_number_never_dropped(typed, number, extension):
    dialable = numbers.normalise(typed, "GB", ALLOWED)
    assert dialable == (number, extension)
    assert numbers.send_digits(dialable.extension) == (f"ww{extension}" if extension else None)


def test_a_number_reads_with_its_extension():
    assert numbers.display("+442079460000", "99") == "+44 20 7946 0000 ext. 99"
    assert numbers.display("+442079460000") == "+44 20 7946 0000"


@pytest.mark.parametrize("region, name", [
    ("GB", "United Kingdom"), ("FR", "France"), ("US", "United States"), ("IE", "Ireland"),
    ("IM", "Isle Of Man"), ("KR", "South Korea"), ("XK", "XK"),
])
def test_country_names_come_from_phonenumbers_locale_table(region, name):
    assert numbers.country_name(region) == name


def test_every_region_phonenumbers_knows_but_three_has_a_name():
    unnamed = {r for r in phonenumbers.SUPPORTED_REGIONS if numbers.country_name(r) == r}
    assert unnamed == {"AC", "TA", "XK"}  # the table has none for them; the sentence shows the code


def test_a_started_app_never_imports_the_geocoder_and_stays_small(tmp_path):
    """The geocoder's prefix data cost ~100 MB a worker; country names no longer need it."""
    script = (
        "import sys\n"
        "from dialer import create_app, numbers\n"
        "app = create_app({'SANDBOX_CREATE_DEMO_AGENT': False})\n"
        "try:\n"
        "    numbers.normalise('+33 6 12 34 56 78', 'GB', ['GB'])\n"
        "except numbers.InvalidNumber as error:\n"
        "    print(error)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('phonenumbers.geocoder', 'phonenumbers.geodata'))))\n"
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
    )
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    sentence, modules, rss_kb = result.stdout.strip().splitlines()[-3:]
    assert sentence == "Calls to France aren't allowed from this dialer (allowed: United Kingdom)."
    assert modules == "[]"
    assert int(rss_kb) < 70_000, f"a started app holds {int(rss_kb) // 1024} MB"
