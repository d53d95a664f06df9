import numpy as np
import pytest
import torch
from conftest import make_tiny_llama

from selbench.selectors.proxy.config import ProfileConfig
from selbench.selectors.proxy.pergrad import per_example_lora_grad_norms
from selbench.selectors.proxy.profile import attach_members, build_profile, member_params
from selbench.selectors.proxy.projections import Projector
from selbench.selectors.proxy.scoring import collate, per_example_losses, scored_losses


def _lora_model(vocab=64, members=1, seed=0):
    model = make_tiny_llama(vocab, seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    pm = attach_members(model, ProfileConfig(members=members, seed=seed), ["q_proj", "k_proj", "v_proj"])
    pm.base_model.set_adapter("m0")
    for p in member_params(pm, "m0"):
        p.requires_grad_(True)
    with torch.no_grad():  # non-zero B so that A's gradient is non-trivial too
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return pm


def _examples(vocab=64, lengths=(5, 9, 16, 3, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for L in lengths:
        ids = torch.randint(3, vocab, (L,), generator=g).tolist()
        n_prompt = max(1, L // 3)
        out.append({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]})
    return out


def test_scored_losses_equal_full_logits_losses():
    pm = _lora_model()
    batch = collate(_examples(), pad_id=0, device="cpu")
    full = per_example_losses(pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                              batch["labels"])
    torch.testing.assert_close(scored_losses(pm, batch), full, rtol=1e-5, atol=1e-6)


def test_per_example_norms_match_brute_force_loop():
    pm = _lora_model()
    ex = _examples()
    batch = collate(ex, pad_id=0, device="cpu")
    norms = per_example_lora_grad_norms(pm, batch)
    params = member_params(pm, "m0")
    for i, e in enumerate(ex):
        one = collate([e], pad_id=0, device="cpu")
        for p in params:
            p.grad = None
        loss = per_example_losses(pm(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits,
                                  one["labels"])[0]
        loss.backward()
        ref = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item()
        assert abs(norms[i].item() - ref) / ref < 1e-5


def test_norms_api_leaves_existing_grads_untouched():
    pm = _lora_model()
    params = member_params(pm, "m0")
    for p in params:
        p.grad = torch.ones_like(p)
    per_example_lora_grad_norms(pm, collate(_examples(), 0, "cpu"))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)


def test_countsketch_projection_preserves_norms_on_average():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5000, generator=g)
    proj = Projector([5000], 1024, "countsketch", seed=1)
    y = proj(x)
    ratio = (y.norm(dim=1) / x.norm(dim=1)).mean().item()
    assert 0.9 < ratio < 1.1
    assert torch.equal(proj(x), Projector([5000], 1024, "countsketch", seed=1)(x))  # seeded


def _rows(n=12, seed=0):
    import random

    rng = random.Random(seed)
    w = "a b c d e f g h i j k l m n o p".split()
    return [{"id": str(i), "instruction": " ".join(rng.choices(w, k=rng.randint(2, 8))), "input": "",
             "output": " ".join(rng.choices(w, k=rng.randint(1, 10)))} for i in range(n)]


def test_profile_members_differ_backbone_frozen_and_deterministic(tokenizer):
    model = make_tiny_llama(len(tokenizer))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = ProfileConfig(members=3, epochs=2, batch_size=4, max_length=64, learning_rate=1e-2)
    prof = build_profile(_rows(), cfg, progress=False, model=model, tokenizer=tokenizer)
    assert prof.norms.shape == (3, 2, 12) and np.all(prof.norms > 0)
    # members differ (own init + own order)
    assert not np.allclose(prof.norms[0], prof.norms[1])
    # backbone unchanged
    for n, p in model.named_parameters():
        if "lora_" not in n:
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, before[key]), n
    # training moved the members: epoch-2 losses lower on average than epoch-1
    assert prof.losses[:, 1].mean() < prof.losses[:, 0].mean()
    model2 = make_tiny_llama(len(tokenizer))
    prof2 = build_profile(_rows(), cfg, progress=False, model=model2, tokenizer=tokenizer)
    np.testing.assert_array_equal(prof.norms, prof2.norms)


def test_profile_pass_mode_and_projection(tokenizer):
    cfg = ProfileConfig(members=2, epochs=2, batch_size=4, max_length=64, record="pass",
                        projection_dim=32)
    prof = build_profile(_rows(), cfg, progress=False, model=make_tiny_llama(len(tokenizer)),
                         tokenizer=tokenizer)
    assert prof.norms.shape == (2, 2, 12) and prof.projections.shape == (12, 32)
    assert np.all(np.isfinite(prof.projections)) and np.abs(prof.projections).sum() > 0


def _tiny_gpt2(tokenizer, dropout=0.1):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(cfg)


def test_pass_records_at_theta_e_with_dropout_off(tokenizer):
    """record=pass: epoch-1 norms are exactly the norms at member 0's weights after epoch 1
    (the saved snapshot) with the backbone in eval mode, although GPT-2 has dropout 0.1."""
    from selbench.selectors.proxy.scoring import tokenize_pool

    cfg = ProfileConfig(members=2, epochs=2, batch_size=4, max_length=64, learning_rate=1e-2,
                        record="pass", projection_dim=0, seed=3)
    model = _tiny_gpt2(tokenizer)
    prof = build_profile(_rows(), cfg, progress=False, model=model, tokenizer=tokenizer)
    # rebuild member 0 at theta_1 from the snapshot and measure in eval mode
    fresh = _tiny_gpt2(tokenizer)
    for p in fresh.parameters():
        p.requires_grad_(False)
    pm = attach_members(fresh, ProfileConfig(members=1), ["c_attn"], seed=3)
    pm.load_state_dict(prof.snapshot, strict=False)
    pm.base_model.set_adapter("m0")
    for p in member_params(pm, "m0"):
        p.requires_grad_(True)
    pm.eval()
    data = tokenize_pool(_rows(), tokenizer, "alpaca", 64)
    norms = per_example_lora_grad_norms(pm, collate(data, tokenizer.pad_token_id, "cpu")).numpy()
    np.testing.assert_allclose(prof.norms[0, 0], norms, rtol=1e-4)
    # deterministic although dropout is active during the updates
    prof2 = build_profile(_rows(), cfg, progress=False, model=_tiny_gpt2(tokenizer), tokenizer=tokenizer)
    np.testing.assert_array_equal(prof.norms, prof2.norms)
    # with dropout on, the same example at the same weights would differ (what pass avoids)
    pm.train()
    noisy = per_example_lora_grad_norms(pm, collate(data, tokenizer.pad_token_id, "cpu")).numpy()
    assert not np.allclose(noisy, norms, rtol=1e-3)


def test_run_seed_reaches_the_profile(tiny_pool_rows, tiny_model_dir, tmp_path):
    from selbench.runs import RunDir
    from selbench.selectors.base import SelectionContext
    from selbench.selectors.proxy.profile import cached_profile

    cfg = ProfileConfig(proxy=tiny_model_dir, members=2, epochs=2, batch_size=4, max_length=64,
                        learning_rate=1e-2, projection_dim=0)
    assert cfg.seed is None  # None = the run seed
    profs = []
    for seed in (0, 1, 0):
        ctx = SelectionContext(seed=seed, run_dir=RunDir(tmp_path), pool_key="p", log=lambda m: None,
                               progress=False)
        profs.append((cached_profile(tiny_pool_rows, cfg, ctx), ctx.notes["profile"]))
    (a, fa), (b, fb), (c, fc) = profs
    assert fa != fb and fa == fc  # one cached profile per seed
    assert not np.allclose(a.norms, b.norms)
    np.testing.assert_array_equal(a.norms, c.norms)
    assert a.meta["config"]["seed"] == 0 and b.meta["config"]["seed"] == 1
