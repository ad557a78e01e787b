# Input functions, wildcard constraints and the pre-flight check shared by every rule.
from mtcxr.config import zeroshot_prompts
from mtcxr.preflight import clear_running, mark_running, preflight, stop_on_input_error

# Backbones and the dataset as a whole are checked before any job starts; what ingest reads
# is its input, so that a changed manifest, image, CSV or reports zip reruns it.
with stop_on_input_error():
    INGEST_INPUTS = preflight(config)

RESULTS = config["results"]
SHARDS = list(range(config["images"]["shards"]))
VARIANTS = list(config["variants"])
XTRA_VARIANTS = list(config["xtra"]["variants"])
# Fine-tuned backbones (finetune.backbones): each is a backbone of its own, built by finetune_backbone,
# evaluated with its own `variants` (zeroshot and the variant it was trained with, unless it says).
FINETUNED = config["finetune"]["backbones"]
BACKBONES = list(config["backbones"]) + list(FINETUNED)
BACKBONE_VARIANTS = {backbone: VARIANTS for backbone in config["backbones"]} | {
    name: [v for v in VARIANTS if v in (entry.get("variants") or ["zeroshot", entry["variant"]])]
    for name, entry in FINETUNED.items()
}
GENERATION = config["generation"]["enabled"]
# Training seeds: each trained variant once per seed; an untrained variant (zeroshot) runs once, at
# the first seed. X-TRA, report generation and the t-SNE figure use the first seed's heads.
SEEDS = [int(seed) for seed in config["train"]["seeds"]]
PRIMARY_SEED = SEEDS[0]
CXR_CLIP_IMAGES = config["evaluate"]["cxr_clip_images"]
if CXR_CLIP_IMAGES == "auto":  # CXR-CLIP's Open-I test set takes every frontal image; MIMIC-CXR one per study
    CXR_CLIP_IMAGES = "every_frontal" if config["dataset"]["kind"] == "iu_xray" else "first_frontal"
# Zero-shot classification's prompts, {observation: {positive: [...], negative: [...]}}: a param of
# embed_prompts, so that changing one reruns it and the evaluations that read its table.
ZEROSHOT_PROMPTS = zeroshot_prompts(config["evaluate"]["zeroshot_classification"])
DEMO_DIR = f"{RESULTS}/models/demo_backbone"
ENV = "../envs/mtcxr.yaml"


wildcard_constraints:
    backbone="|".join(BACKBONES) or "none",
    finetuned="|".join(FINETUNED) or "none",
    variant="|".join(VARIANTS) or "none",
    shard=r"\d+",
    seed=r"\d+",
    split="train|validate|test",


def finetuned_dir(name):
    return f"{RESULTS}/models/finetuned/{name}"


def spec_of(backbone):
    """A backbone's spec: the config's, or the local-dir folder finetune_backbone writes."""
    if backbone in FINETUNED:
        return f"local-dir:{finetuned_dir(backbone)}"
    return config["backbones"][backbone]


def backbone_spec(wildcards):
    return spec_of(wildcards.backbone)


def demo_dir_param(wildcards):
    """The demo backbone's folder when this backbone is `demo`, else None."""
    return DEMO_DIR if backbone_spec(wildcards) == "demo" else None


def backbone_folder(backbone):
    """[the folder the workflow writes for this backbone] (demo, fine-tuned); [] for one named in the config."""
    if backbone in FINETUNED:
        return [finetuned_dir(backbone)]
    return [DEMO_DIR] if spec_of(backbone) == "demo" else []


def demo_dir_input(wildcards):
    """Make the demo or fine-tuned backbone's folder an input only of the jobs that load it."""
    return backbone_folder(wildcards.backbone)


def finetune_entry(wildcards):
    return FINETUNED[wildcards.finetuned]


def finetune_base_spec(wildcards):
    return spec_of(finetune_entry(wildcards)["base"])


def finetune_base_input(wildcards):
    return backbone_folder(finetune_entry(wildcards)["base"])


def finetune_demo_dir(wildcards):
    return DEMO_DIR if finetune_base_spec(wildcards) == "demo" else None


def finetune_variant_config(wildcards):
    return config["variants"][finetune_entry(wildcards)["variant"]]


def finetune_settings(wildcards):
    """The shared `finetune:` settings with this entry's own keys over them: what changes its weights.

    Left out: `checkpoint_minutes` and `grad_checkpointing` (how often a checkpoint is written; whether
    activations are recomputed, which leaves the gradients as they are: the job reads them from the config,
    so changing them reruns nothing) and the entry's `variants` (what is evaluated on it afterwards)."""
    untracked = ("backbones", "checkpoint_minutes", "grad_checkpointing")
    shared = {key: value for key, value in config["finetune"].items() if key not in untracked}
    entry = {key: value for key, value in finetune_entry(wildcards).items() if key != "variants"}
    return {**shared, **entry}


def is_trained(variant):
    return config["variants"][variant].get("train", True)


# Params hold exactly the settings that change a job's output: Snakemake reruns a job whose params
# changed, so a key that does not change it (train.seeds, generation.examples, ...) must not be one.
# `device` stays where it is: CUDA and CPU kernels round differently, so the weights differ.
HEAD_TRAINING_KEYS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "hidden_dim",
    "supcon_temperature",
    "select",
    "criterion",
    "patience",
    "device",
)
XTRA_TRAINING_KEYS = (
    "hidden_dim",
    "attention_heads",
    "dropout",
    "label_tokens",
    "uncertain",
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "device",
)
# The generation settings of one method's reports; `uncertain` and `java` are score_generation's,
# `examples` is summarize's (rows of summary.md).
GENERATION_KEYS = ("reference", "choice", "k")


def train_settings(wildcards):
    """The `train:` settings that change this job's heads: not `seeds` (the job's own seed is its
    wildcard), and for an untrained variant (the identity head) only the head's width."""
    keys = HEAD_TRAINING_KEYS if is_trained(wildcards.variant) else ("hidden_dim",)
    return {key: config["train"][key] for key in keys}


def xtra_settings():
    """The `xtra:` settings that change the X-TRA classifiers (k and the memory reach them as inputs)."""
    return {key: config["xtra"][key] for key in XTRA_TRAINING_KEYS}


def generation_settings():
    return {key: config["generation"][key] for key in GENERATION_KEYS}


def variant_seeds(variant):
    """The training seeds a variant runs with: every seed when it trains, else the first."""
    return SEEDS if is_trained(variant) else [PRIMARY_SEED]


def run_paths(pattern, backbones=None):
    """`pattern` ({backbone}, {variant}, {seed}) for every backbone x variant x its seeds."""
    return [
        pattern.format(backbone=backbone, variant=variant, seed=seed)
        for backbone in (backbones or BACKBONES)
        for variant in BACKBONE_VARIANTS[backbone]
        for seed in variant_seeds(variant)
    ]


def backbone_variant_paths(pattern, variants=None):
    """`pattern` ({backbone}, {variant}) for every backbone x each of its variants (within `variants`)."""
    return [
        pattern.format(backbone=backbone, variant=variant)
        for backbone in BACKBONES
        for variant in BACKBONE_VARIANTS[backbone]
        if variants is None or variant in variants
    ]


# The first seed's projected folder of {backbone}/{variant}: what X-TRA and generation build on.
primary_projected = f"{RESULTS}/projected/{{backbone}}/{{variant}}/seed{PRIMARY_SEED}"


def image_embeddings(wildcards):
    return expand(f"{RESULTS}/embeddings/{wildcards.backbone}/images-{{shard}}.parquet", shard=SHARDS)


def all_reject_tables(wildcards):
    generation = [f"{RESULTS}/generation/rejects.parquet"] if GENERATION else []
    return (
        [f"{RESULTS}/data/rejects.parquet"]
        + expand(f"{RESULTS}/data/pixels/rejects-{{shard}}.parquet", shard=SHARDS)
        + generation
    )


def pixel_reject_tables(wildcards):
    """The images preprocess_images rejected: generation never queries with one of them."""
    return expand(f"{RESULTS}/data/pixels/rejects-{{shard}}.parquet", shard=SHARDS)


def generation_tables(wildcards):
    """Every generation method's reports: the baselines, retrieval per backbone x variant, X-TRA per memory."""
    return (
        [f"{RESULTS}/generation/baselines.parquet"]
        + backbone_variant_paths(f"{RESULTS}/generation/{{backbone}}/{{variant}}/retrieval.parquet")
        + backbone_variant_paths(f"{RESULTS}/generation/{{backbone}}/{{variant}}/xtra.parquet", XTRA_VARIANTS)
    )


def generation_summary_inputs(wildcards):
    """The generation metrics and per-study scores `summarize` reads, when generation is on."""
    if not GENERATION:
        return {}
    return {
        "generation": f"{RESULTS}/metrics/generation.parquet",
        "generation_studies": f"{RESULTS}/metrics/generation_per_study.parquet",
    }


def index_dirs(wildcards):
    """Variants shown side by side in the t-SNE figure (first seed): zeroshot and multitask when configured."""

    def shown(backbone):
        variants = BACKBONE_VARIANTS[backbone]
        return [v for v in ("zeroshot", "multitask") if v in variants] or variants[:2]

    return {b: {v: f"{RESULTS}/index/{b}/{v}/seed{PRIMARY_SEED}" for v in shown(b)} for b in BACKBONES}


def index_folders(wildcards):
    return [folder for variants in index_dirs(wildcards).values() for folder in variants.values()]


def ingest_inputs(wildcards):
    return INGEST_INPUTS


def metric_tables(wildcards):
    """Every backbone x variant x seed metrics table: the inputs of the `evaluate` target."""
    return run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.parquet")


def trained_history_map(wildcards):
    """ "variant/seedN" -> history.parquet of every run of this backbone that trains (not `zeroshot`)."""
    return {
        f"{v}/seed{s}": f"{RESULTS}/models/{wildcards.backbone}/{v}/seed{s}/history.parquet"
        for v in BACKBONE_VARIANTS[wildcards.backbone]
        if is_trained(v)
        for s in SEEDS
    }


def trained_histories(wildcards):
    return list(trained_history_map(wildcards).values())


def xtra_model_dir(wildcards):
    return f"{RESULTS}/xtra/{wildcards.backbone}/{wildcards.variant}/model"


def xtra_model_files(wildcards):
    """The X-TRA classifier and its query-only baseline (weights, configs) and their training history."""
    folder = xtra_model_dir(wildcards)
    names = ["xtra.safetensors", "xtra.json", "query_only.safetensors", "query_only.json", "history.parquet"]
    return [f"{folder}/{name}" for name in names]


def xtra_tables(suffix):
    """Input function: the X-TRA metrics tables (`parquet`, `paired.parquet`) of every backbone x X-TRA variant."""

    def tables(wildcards):
        return backbone_variant_paths(f"{RESULTS}/metrics/xtra/{{backbone}}/{{variant}}.{suffix}", XTRA_VARIANTS)

    return tables


def final_outputs():
    xtra = [f"{RESULTS}/figures/xtra_auc.png"] if XTRA_VARIANTS else []
    xtra += [f"{RESULTS}/figures/generation.png", f"{RESULTS}/metrics/generation.csv"] if GENERATION else []
    per_backbone = ["tsne", "training", "finding_precision", "clinical_precision", "retrieval_examples"]
    return [
        f"{RESULTS}/metrics/summary.csv",
        f"{RESULTS}/metrics/summary.md",
        f"{RESULTS}/metrics/summary.html",
        f"{RESULTS}/metrics/finding_precision.csv",
        f"{RESULTS}/metrics/zeroshot_auc.csv",
        f"{RESULTS}/labels/agreement.parquet",
        f"{RESULTS}/figures/recall_at_k.png",
        f"{RESULTS}/figures/zeroshot_auc.png",
        f"{RESULTS}/figures/rejects.png",
        *expand(f"{RESULTS}/figures/{{name}}_{{backbone}}.png", name=per_backbone, backbone=BACKBONES),
        *xtra,
    ]


def variant_config(wildcards):
    return config["variants"][wildcards.variant]


def example_index_dirs(wildcards):
    """Variant -> first-seed index folder of {backbone} for the retrieval examples: the t-SNE figure's variants."""
    return index_dirs(wildcards)[wildcards.backbone]


def example_index_folders(wildcards):
    return list(example_index_dirs(wildcards).values())


def shared_subcategory():
    """The report subcategory of a figure drawn for every backbone in one job: the backbone when there is
    one (beside its per-backbone figures), else "all backbones"."""
    return BACKBONES[0] if len(BACKBONES) == 1 else "all backbones"
