"""Can a tiny CLIP learn position in the synthetic world, and how fast? (the probes behind the demo's world)

A plain torch loop on pre-rendered tensors (no Trainer, no DataLoader), with the library's
loss, substitution engine and tiny model: ``--stage1 N`` steps on coarse captions first, then
``--steps`` steps on detailed captions with ``--k`` hard negatives of ``--concept``; every 250
steps it prints the training hard-negative accuracy and the held-out concept accuracy (true
caption above every substitution of its first keyword). Examples (README, demo section)::

    python benchmarks/synthetic_location_probe.py --steps 2500 --tag two-to-four     # 2-4 objects: stays at chance
    python benchmarks/synthetic_location_probe.py --steps 1500 --p_relation 0 --p_side 1 \
        --min_obj 1 --max_obj 1 --tag one-object                                    # one object: learned by ~1,000
"""
import argparse
import json
import time

import numpy as np, torch, torch.nn.functional as F
from hf_hardneg.synthetic import WorldConfig, iter_scenes, render_scene
from hf_hardneg.concepts import get_concept
from hf_hardneg.substitution import enumerate_negatives, sample_negatives
from hf_hardneg.testing import make_tiny_model
from hf_hardneg.loss import HardNegativeContrastiveLoss, replacement_generator

p = argparse.ArgumentParser()
p.add_argument("--layers", type=int, default=2); p.add_argument("--width", type=int, default=64)
p.add_argument("--patch", type=int, default=8); p.add_argument("--size", type=int, default=32)
p.add_argument("--steps", type=int, default=1500); p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--batch", type=int, default=64); p.add_argument("--k", type=int, default=1)
p.add_argument("--concept", default="location"); p.add_argument("--n", type=int, default=12000)
p.add_argument("--p_relation", type=float, default=0.6); p.add_argument("--p_side", type=float, default=0.4)
p.add_argument("--layout", default="grid"); p.add_argument("--threads", type=int, default=1)
p.add_argument("--mode", default="replace"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--stage1", type=int, default=0, help="coarse-caption steps before")
p.add_argument("--tag", default=""); p.add_argument("--pos_std", type=float, default=None); p.add_argument("--lr2", type=float, default=None); p.add_argument("--min_obj", type=int, default=2); p.add_argument("--max_obj", type=int, default=4)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
cfg = WorldConfig(image_size=a.size, layout=a.layout, p_relation=a.p_relation, p_side=a.p_side, min_objects=a.min_obj, max_objects=a.max_obj)
concept = get_concept(a.concept)
mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]; std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
t0 = time.time()
imgs, caps, coarse = [], [], []
for i, scene, cap, co in iter_scenes(a.n + 1000, seed=0, config=cfg):
    imgs.append(torch.from_numpy(np.asarray(render_scene(scene, cfg.supersample))).permute(2, 0, 1))
    caps.append(cap); coarse.append(co)
X = ((torch.stack(imgs).float() / 255) - mean) / std
print("render", time.time() - t0, flush=True)
texts = caps + coarse + list(concept.keywords) + [r for rs in concept.substitutions.values() for r in rs]
model, tok, _ = make_tiny_model(texts, image_size=a.size, patch_size=a.patch, hidden_size=a.width, num_layers=a.layers,
                                projection_dim=a.width, max_length=40, seed=a.seed)
if a.pos_std:
    with torch.no_grad():
        pe = model.vision_model.embeddings.position_embedding.weight
        pe.normal_(0, a.pos_std)
        pw = model.vision_model.embeddings.patch_embedding.weight
        print("patch-embedding output std ~", float(pw.std() * (pw[0].numel() ** 0.5)), "position std", a.pos_std)
train_idx = [i for i in range(a.n) if enumerate_negatives(caps[i], concept)]
eval_idx = [i for i in range(a.n, a.n + 1000) if enumerate_negatives(caps[i], concept)]
print("train rows with concept", len(train_idx), "eval", len(eval_idx), flush=True)
def enc_text(t):
    b = tok(t, padding=True, truncation=True, max_length=40, return_tensors="pt")
    return model.get_text_features(**b)
def feats(out):
    return out if torch.is_tensor(out) else out.pooler_output
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1)
loss_fn = HardNegativeContrastiveLoss(mode=a.mode)
rng = np.random.default_rng(a.seed)
def evaluate():
    model.eval(); correct = 0
    with torch.no_grad():
        for s in range(0, len(eval_idx), 200):
            ids = eval_idx[s:s + 200]
            ie = F.normalize(feats(model.get_image_features(pixel_values=X[ids])), dim=-1)
            for j, i in enumerate(ids):
                cands = [caps[i]] + [n.text for n in enumerate_negatives(caps[i], concept)]
                te = F.normalize(feats(enc_text(cands)), dim=-1)
                sc = te @ ie[j]
                correct += int(sc[0] > sc[1:].max() + 1e-6)
    model.train(); return correct / len(eval_idx)
hist = []
steps_total = a.stage1 + a.steps
t0 = time.time(); accs = []
for step in range(steps_total):
    stage1 = step < a.stage1
    if step == a.stage1 and a.lr2:
        for g in opt.param_groups: g["lr"] = a.lr2
    pool = range(a.n) if stage1 else train_idx
    ids = rng.choice(len(pool), a.batch, replace=False); ids = [pool[i] for i in ids]
    text = [coarse[i] if stage1 else caps[i] for i in ids]
    k = 0 if stage1 else a.k
    negs = [n.text for i in ids for n in sample_negatives(caps[i], concept, k, rng)] if k else []
    te_all = feats(enc_text(text + negs))
    ie = feats(model.get_image_features(pixel_values=X[ids]))
    te, hn = te_all[:a.batch], (te_all[a.batch:].view(a.batch, k, -1) if k else None)
    out = loss_fn(ie, te, hn, model.logit_scale.exp(), generator=replacement_generator(a.seed, step))
    opt.zero_grad(); out.loss.backward(); opt.step()
    with torch.no_grad(): model.logit_scale.clamp_(0, 4.6052)
    if out.hard_negative_accuracy is not None: accs.append(float(out.hard_negative_accuracy))
    if (step + 1) % 250 == 0 or step + 1 == steps_total:
        ev = evaluate() if not stage1 or step + 1 == a.stage1 else None
        print(f"step {step+1} loss {out.loss.item():.3f} hnacc {np.mean(accs[-100:]) if accs else float('nan'):.3f} eval_{a.concept} {ev} t {time.time()-t0:.0f}s", flush=True)
        hist.append((step + 1, ev))
print(json.dumps({"args": vars(a), "history": hist}))
