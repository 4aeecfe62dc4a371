"""One number policy for card YAML (issue 24, item 4), through the session's real local hub server.

Every integer form YAML 1.1 writes (decimal, hex, octal, binary, base 60, underscores) and floats with huge
exponents or in base 60: a value needing more than ``safe_yaml.MAX_INT_DIGITS`` digits is refused with a 400
naming its path, before Python's int conversion could raise (it used to answer "500 ValueError: Exceeds the
limit (4300 digits)"); the neighbours just inside the bound load. A value its tag cannot hold (``!!int abc``)
is refused the same way. Cards pushed with git past these checks still read as 200 (without cardData).
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from huggingface_hub import HfApi

from hf_transfer_seg import safe_yaml
from hf_transfer_seg.localhub import storage as st

METRIC = "model-index[0].results[0].metrics[0].value"


def _card(value: str) -> str:
    return ("---\nlicense: mit\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-segmentation}\n"
            "    dataset: {type: org/drive, name: DRIVE}\n    metrics:\n"
            f"    - type: dice\n      value: {value}\n---\n# card\n")


LIMIT = safe_yaml.MAX_INT_DIGITS
REFUSED = {
    f"decimal, {LIMIT + 1} digits": "9" * (LIMIT + 1),
    f"decimal, {LIMIT + 1} digits with underscores": "_".join("9" * (LIMIT + 1)),
    "negative decimal, 5,000 digits": "-" + "9" * 5000,
    "hex, 333 digits": "0x" + "f" * 333,
    "octal, 443 digits": "0" + "7" * 443,
    "binary, 1,329 digits": "0b" + "1" * 1329,
    "binary, 20,000 ones": "0b" + "1" * 20000,
    "binary with underscores, 20,000 ones": "0b" + "_1" * 20000,
    "base 60, 3,000 groups": "1:" + ":".join(["30"] * 3000),
    "base 60, 226 groups": "1:" + ":".join(["59"] * 225),
    "!!int binary, 20,000 ones": "!!int 0b" + "1" * 20000,
    "!!int 0o octal, 5,000 digits": "!!int 0o" + "7" * 5000,
    "float, huge exponent": "1.0e+99999999999",
    "float, 9-digit exponent": "1.0e+999999999",
    "float, 5,000 digits before the point": "9" * 5000 + ".5",
    "float in base 60, 3,000 groups": "1:" + ":".join(["30"] * 3000) + ".5",
    "!!float 1e400": "!!float 1e400",
    "!!int abc": "!!int abc",
    "!!float abc": "!!float abc",
    "date 2001-13-45": "2001-13-45",
}
# just inside the bound: they load (a value beyond a double is then refused by the card rules, with its path)
INSIDE = {
    f"decimal, {LIMIT} digits": ("9" * LIMIT, 10 ** LIMIT - 1),
    "hex, 332 digits": ("0x" + "f" * 332, 16 ** 332 - 1),
    "octal, 442 digits": ("0" + "7" * 442, 8 ** 442 - 1),
    "binary, 1,328 digits": ("0b" + "1" * 1328, 2 ** 1328 - 1),
    "binary, 20,000 leading zeros": ("0b" + "0" * 20000 + "1", 1),
    "base 60, 225 groups": ("1:" + ":".join(["59"] * 224), 2 * 60 ** 224 - 1),
    "base 60, 1:20:30": ("1:20:30", 4830),
    "underscores": ("1_000_000", 1_000_000),
    "float 1.0e+300": ("1.0e+300", 1e300),
}


@pytest.mark.parametrize("what", list(REFUSED))
def test_the_loader_refuses_each_form_naming_the_path(what):
    with pytest.raises(safe_yaml.YAMLLimitError, match=r"^model-index\[0\]\.results\[0\]\.metrics\[0\]\.value: "):
        safe_yaml.front_matter(_card(REFUSED[what]))


@pytest.mark.parametrize("what", list(INSIDE))
def test_the_neighbours_inside_the_bound_load(what):
    literal, value = INSIDE[what]
    loaded = safe_yaml.front_matter(_card(literal))["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert loaded == value


def test_a_huge_mapping_key_is_refused_too():
    with pytest.raises(safe_yaml.YAMLLimitError, match=r"^extra\.\(key\): an integer"):
        safe_yaml.load("extra:\n  ? 0b" + "1" * 20000 + "\n  : v\n")


@pytest.mark.parametrize("what", ["binary, 20,000 ones", "base 60, 3,000 groups", "float in base 60, 3,000 groups",
                                  "!!int abc", "date 2001-13-45", f"decimal, {LIMIT + 1} digits"])
def test_the_hub_answers_400_with_the_path_on_validate_and_commit_and_200_on_read(hub_endpoint, hub_root, repo_id,
                                                                                   what):
    api = HfApi(endpoint=hub_endpoint)
    api.create_repo(repo_id)
    card = _card(REFUSED[what])
    checked = httpx.post(f"{hub_endpoint}/api/validate-yaml", json={"content": card, "repoType": "model"}, timeout=60)
    assert checked.status_code == 400 and METRIC in checked.text, checked.text[:300]
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):  # the genuine client asks validate-yaml
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    lines = [{"key": "header", "value": {"summary": "raw", "description": ""}},
             {"key": "file", "value": {"content": base64.b64encode(card.encode()).decode(), "path": "README.md",
                                       "encoding": "base64"}}]
    committed = httpx.post(f"{hub_endpoint}/api/models/{repo_id}/commit/main",
                           content="".join(json.dumps(line) + "\n" for line in lines).encode(),
                           headers={"Content-Type": "application/x-ndjson"}, timeout=60)
    assert committed.status_code == 400 and METRIC in committed.headers["x-error-message"], committed.text[:300]
    repo = st.Storage(hub_root).get("model", repo_id)  # pushed with git, past the checks
    repo.commit("main", [st.FileOp("README.md", repo.write_blob(card.encode()))], summary="pushed with git")
    info = api.model_info(repo_id)
    assert info.card_data is None and "README.md" in {s.rfilename for s in info.siblings}


def test_a_card_with_every_form_inside_the_bound_is_accepted(hub_endpoint, repo_id):
    api = HfApi(endpoint=hub_endpoint)
    api.create_repo(repo_id)
    card = "---\nlicense: mit\nextra: {a: 0x_ff, b: 0b1010, c: 0777, d: '1:20:30', e: 1:20:30, f: 1_000, g: 1.0e+300}\n---\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    extra = httpx.get(f"{hub_endpoint}/api/models/{repo_id}").json()["cardData"]["extra"]
    assert extra == {"a": 255, "b": 10, "c": 511, "d": "1:20:30", "e": 4830, "f": 1000, "g": 1e300}
