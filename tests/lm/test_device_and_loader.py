"""One device resolver and one model loader (sae_lab.lm.load), used by harvest, train, eval,
inspect and steer alike."""

from __future__ import annotations

import pytest
import torch

from sae_lab.cli import main
from sae_lab.lm.load import load_model, load_tokenizer, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_device_known_answers(monkeypatch, no_cuda):
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"device 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_train_on_a_missing_gpu_is_one_line_and_writes_nothing(tmp_path, capsys, no_cuda):
    # Before: a RuntimeError traceback, after config.yaml was written into out_dir.
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--set", "device=cuda", "--set", f"out_dir={out}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "sae-lab train: error: device 'cuda': CUDA is not available on this machine"
    assert not out.exists()


def test_harvest_on_a_missing_gpu_is_one_line(tmp_path, capsys, no_cuda, corpus, tiny_lm):
    # Before: torch.device("cuda") was accepted and the model's .to("cuda") failed with an
    # AssertionError traceback ("Torch not compiled with CUDA enabled").
    out = tmp_path / "acts"
    with pytest.raises(SystemExit) as e:
        main(["harvest", "--model", str(tiny_lm), "--dataset", str(corpus), "--out", str(out),
              "--device", "cuda", "--no-progress"])
    assert e.value.code == 2
    assert "device 'cuda': CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_load_model_with_and_without_lm_head(tiny_lm):
    lm = load_model(str(tiny_lm))
    body = load_model(str(tiny_lm), dtype="bfloat16", lm_head=False)
    assert type(lm).__name__ == "GPT2LMHeadModel" and type(body).__name__ == "GPT2Model"
    assert not lm.training and next(body.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(body.wte.weight.float(), lm.transformer.wte.weight,
                               rtol=1e-2, atol=1e-2)
    assert load_tokenizer(str(tiny_lm))("hello")["input_ids"]


def test_load_model_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model ./nowhere/at/all: no such directory"):
        load_model("./nowhere/at/all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load model .*empty"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot load tokenizer .*empty"):
        load_tokenizer(str(tmp_path / "empty"))


def test_harvest_names_a_missing_model_directory(tmp_path, capsys, corpus):
    with pytest.raises(SystemExit) as e:
        main(["harvest", "--model", "./no/such/model", "--dataset", str(corpus), "--out",
              str(tmp_path / "acts"), "--device", "cpu", "--no-progress"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "sae-lab harvest: error: --model ./no/such/model: no such directory"


def test_a_relative_model_path_is_recorded_resolved(tiny_lm, corpus, tmp_path, monkeypatch):
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.data.shards import read_manifest

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny-gpt2").symlink_to(tiny_lm, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    cfg = HarvestConfig(model="runs/tiny-gpt2", dataset=str(corpus), out="acts", layers=(0,),
                        ctx_len=16, batch_size=8, max_tokens=64, device="cpu",
                        progress=False)
    manifest = read_manifest(harvest(cfg)[0])
    assert manifest["model"] == manifest["tokenizer"] == str(tiny_lm.resolve())
    monkeypatch.chdir(tmp_path / "acts")  # another directory: the recorded name still loads
    assert type(load_model(manifest["model"])).__name__ == "GPT2LMHeadModel"


def test_a_model_only_the_hub_could_give_fails_before_asking_it(tmp_path, monkeypatch):
    import transformers

    def hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    # runs/ is a directory here: runs/tiny-gpt2 is a path, and a missing one
    with pytest.raises(FileNotFoundError, match=r"^--model runs/tiny-gpt2: no such directory$"):
        load_model("runs/tiny-gpt2")
    # elsewhere it could be a Hub id; offline and not cached, it is named at once
    monkeypatch.chdir(tmp_path / "runs")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"--tokenizer runs/tiny-gpt2: no such directory, "
                       r"and not in the Hugging Face cache \(HF_HUB_OFFLINE=1"):
        load_tokenizer("runs/tiny-gpt2")
