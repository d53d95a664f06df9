import pytest

from selbench.registry import Registry, RegistryError


def test_register_get_alias_and_names():
    reg = Registry("widget")

    @reg.register("alpha", "a")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha and reg.get("a") is Alpha
    assert reg.names() == ["alpha"] and "a" in reg and Alpha.registry_name == "alpha"
    assert reg.aliases_of("alpha") == ["a"]


def test_unknown_name_suggests_close_match():
    reg = Registry("selector")
    reg.add("gsnr", object())
    with pytest.raises(RegistryError, match=r"unknown selector 'gsrn'; did you mean 'gsnr'"):
        reg.get("gsrn")


def test_duplicate_registration_is_an_error():
    reg = Registry("x")
    reg.add("a", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", 2)


def test_real_selector_registry_did_you_mean():
    from selbench.selectors import SELECTORS

    with pytest.raises(RegistryError, match="did you mean 'random'"):
        SELECTORS.get("randm")
