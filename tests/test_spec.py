import pytest

from iqaguard import InputError
from iqaguard.spec import format_spec, parse_spec, parse_value


@pytest.mark.parametrize("text,name,params", [
    ("jpeg", "jpeg", {}),
    ("jpeg:quality=50", "jpeg", {"quality": 50}),
    ("ifgsm:eps=8/255,steps=10", "ifgsm", {"eps": 8 / 255, "steps": 10}),
    ("pgd:norm=l2,random_start=false", "pgd", {"norm": "l2", "random_start": False}),
    ("pyiqa:maniqa", "pyiqa:maniqa", {}),
    ("pyiqa:maniqa:as_loss=true", "pyiqa:maniqa", {"as_loss": True}),
    ("folder:root='/data/a,b'", "folder", {"root": "/data/a,b"}),
    ("x:target=none", "x", {"target": None}),
])
def test_parse(text, name, params):
    s = parse_spec(text)
    assert s.name == name and s.params == params


def test_canonical_form_is_sorted_and_round_trips():
    a = parse_spec("ifgsm:steps=10,eps=0.0314")
    b = parse_spec("ifgsm:eps=0.0314,steps=10")
    assert format_spec(a.name, a.params) == format_spec(b.name, b.params) == "ifgsm:eps=0.0314,steps=10"
    for text in ["folder:root='/x y',csv=''", "x:v='50'", "x:v=50", "x:s='a:b'", "x:f=0.1"]:
        s = parse_spec(text)
        assert parse_spec(format_spec(s.name, s.params)) == s


def test_shortest_float_repr():
    assert format_spec("a", {"eps": 4 / 255}) == "a:eps=" + repr(4 / 255)
    assert format_spec("a", {"x": 0.1}) == "a:x=0.1"


@pytest.mark.parametrize("bad", ["", "  ", "jpeg:=3", "j peg", "jpeg:q=1,q=2", "a:b='x", "a:b=1/0", "a:1b=2"])
def test_malformed(bad):
    with pytest.raises(InputError):
        parse_spec(bad)


def test_values():
    assert parse_value("8/255") == 8 / 255
    assert parse_value("1e-3") == 0.001
    assert parse_value("abc") == "abc"
    assert parse_value("TRUE") is True
