"""The registry reads a model's defaults from its constructor (registry.py): JSON-ready, checked at registration."""
import json
import subprocess
import sys

import pytest

from tamperscope import registry
from tamperscope.models.base import TamperModel
from tamperscope.registry import create_model, get_entry, list_models, register_model


class Toy(TamperModel):
    def __init__(self, width: int = 8, sizes=(1, 2), scale: float = 1.0, weights: str | None = None):
        super().__init__()
        self.width, self.sizes = width, sizes


@pytest.fixture(autouse=True)
def scratch_registry(monkeypatch):
    """Registrations here go to a copy of the full registry and leave the real one as it was."""
    list_models()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_default_config_is_the_constructor_signature_as_json():
    register_model("toy", paper="-", overrides={"width": 4}, tiny_config={"sizes": [1]})(Toy)
    defaults = get_entry("toy").default_config
    assert defaults == {"width": 4, "sizes": [1, 2], "scale": 1.0, "weights": None}
    assert json.dumps(defaults) == '{"width": 4, "sizes": [1, 2], "scale": 1.0, "weights": null}'
    model = create_model("toy", scale=2.0)
    assert (model.width, model.sizes) == (4, [1, 2]) and model.config == defaults | {"scale": 2.0}
    assert create_model("toy", **json.loads(json.dumps(model.config))).config == model.config
    with pytest.raises(ValueError, match="unknown config key 'depth'"):
        create_model("toy", depth=3)


class Required(TamperModel):
    def __init__(self, width, scale: float = 1.0):
        super().__init__()


class Open(TamperModel):
    def __init__(self, width: int = 8, **options):
        super().__init__()


@pytest.mark.parametrize("cls, missing", [(Required, "width"), (Open, "options")])
def test_a_parameter_without_a_default_fails_at_registration(cls, missing):
    with pytest.raises(TypeError, match=f"{cls.__name__}.__init__: {missing} without a default"):
        register_model("no-default", paper="-")(cls)


@pytest.mark.parametrize("where", ["overrides", "tiny_config"])
def test_a_stale_key_fails_at_registration(where):
    with pytest.raises(ValueError, match=f"toy {where}: unknown config key 'depth'"):
        register_model("toy", paper="-", **{where: {"depth": 2}})(Toy)
    assert "toy" not in list_models()


def test_looking_up_a_model_imports_its_own_module_first_and_every_module_only_when_needed():
    """``copymove`` alone (predict --checkpoint copymove) no longer imports every architecture; a name registered in
    a module of another name (segformer-b0) still resolves."""
    code = ("import sys; from tamperscope.registry import get_entry; get_entry('copymove'); "
            "print(sorted(m for m in sys.modules if m.startswith('tamperscope.models.'))); "
            "print(get_entry('segformer-b0').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['tamperscope.models.base', 'tamperscope.models.copymove']" and out[1] == "segformer-b0"
