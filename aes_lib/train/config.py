"""The training stage's settings (one dataclass, loaded from YAML, saved beside every output)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aes_lib.config import Config, require
from aes_lib.models import CONVERSATIONS, IMAGE_MODES

#: How multiple-choice records are presented in training (see TrainConfig.mcq_form).
MCQ_FORMS = ("letter", "cloze", "both")

#: LLaVA-1.5 recipe defaults (PAPER_FACTS.md: "Training recipes of the peers").
RECIPE_LR = {"lora": 2e-4, "full": 2e-5}
RECIPE_PROJECTOR_LR = {"lora": 2e-5, "full": 2e-5}


@dataclass
class TrainConfig(Config):
    # --- inputs and outputs
    train_file: str = field(default="outputs/instructions/llava_train.json", metadata={
        "help": "LLaVA-layout JSON list [{id, image, conversations, type, qtype}] to train on"})
    val_file: str = field(default="outputs/instructions/llava_val.json", metadata={
        "help": "LLaVA-layout JSON for the validation loss and the before/after samples ('' = none). "
                "Never point this at the test split."})
    image_root: str = field(default="outputs/data", metadata={
        "help": "folder the records' 'image' paths are relative to"})
    output_dir: str = field(default="outputs/train/run", metadata={
        "help": "run folder: checkpoint-N/, adapter/, merged/, loss.csv, config.json, data_stats.json"})
    model: str = field(default="tiny", metadata={
        "help": "'tiny' (build the embedded tiny LLaVA, random weights, into base_model_dir), 'small' "
                "(build the small pretrained LLaVA from installed packages: EfficientNet-Lite0 + "
                "SmolLM2-135M-Instruct) or a llava-hf-layout folder / hub id (LlavaForConditionalGeneration)"})
    base_model_dir: str = field(default="outputs/train/base_model", metadata={
        "help": "where model='tiny' or 'small' is built (reused when it already exists)"})
    # --- input format (saved with the model as input_format.json; evaluation presents inputs the same way)
    image_mode: str = field(default="", metadata={
        "help": "'' (what the model folder's input_format.json says, else pad) | pad (LLaVA-1.5's image_aspect_ratio pad: pad to square in the image processor's mean "
                "colour, the whole photo seen) | crop (resize the short side, centre-crop)"})
    conversation: str = field(default="", metadata={
        "help": "'' (what the model folder's input_format.json says, else v1) | v1 (LLaVA-1.5's training conversation with its system prompt) | llava_v1 (LLaVA's "
                "evaluation wording of it) | checkpoint (the checkpoint's own chat template; "
                "llava-hf's has no system prompt)"})
    # --- method
    method: str = field(default="lora", metadata={"help": "'lora' (peft) or 'full' fine-tuning"})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (LLaVA-1.5 recipe: 128)"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (recipe: 256)"})
    lora_dropout: float = field(default=0.05, metadata={
        "help": "dropout on the LoRA path (recipe: 0.05; 0 is faster and lets peft skip a copy); masks "
                "are seeded per micro-batch by seed, step and its place in the global batch"})
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"],
                               metadata={"help": "leaf names of the language model's linear layers "
                                                 "that get LoRA (default: every one)"})
    modules_to_save: list = field(default_factory=list, metadata={
        "help": "extra modules trained in full and stored with the adapter (e.g. ['lm_head'] for "
                "the random-init tiny model, which cannot learn through LoRA alone)"})
    train_projector: bool = field(default=True, metadata={
        "help": "train the multimodal projector (stored with the adapter in LoRA mode)"})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "keep the CLIP tower frozen"})
    # --- optimisation
    lr: float | None = field(default=None, metadata={
        "help": "peak learning rate (None: recipe default, 2e-4 LoRA / 2e-5 full)"})
    projector_lr: float | None = field(default=None, metadata={
        "help": "projector learning rate (None: recipe default 2e-5)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear warm-up share of the steps"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "cosine | linear | constant"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = off)"})
    num_epochs: float = field(default=1.0, metadata={"help": "epochs when max_steps is 0"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps (0 = from num_epochs)"})
    global_batch_size: int = field(default=128, metadata={
        "help": "samples per optimizer step, whatever the GPU count (recipe: 128)"})
    micro_batch_size: int = field(default=16, metadata={
        "help": "samples per forward pass per process; accumulation = global / (micro x processes)"})
    max_length: int = field(default=2048, metadata={"help": "longest token sequence (recipe: 2048)"})
    max_dropped_fraction: float = field(default=0.5, metadata={
        "help": "error when more than this share of the samples has no supervised token left"})
    max_train_samples: int = field(default=0, metadata={"help": "use only the first N records (0 = all)"})
    mcq_form: str = field(default="letter", metadata={
        "help": "how multiple-choice records are trained: letter (as generated: options listed, answer "
                "'B. No'), cloze (the question alone, answered with the option's text 'No'; the form "
                "small language models answer best) or both (each such record in both forms)"})
    types: list = field(default_factory=list, metadata={
        "help": "train only on records whose 'type' is listed, e.g. ['perception_mcq', "
                "'empathy_mcq', 'level_mcq'] ([] = every type); applied before max_train_samples"})
    seed: int = field(default=0, metadata={"help": "seeds model build, LoRA init, shuffling, dropout"})
    # --- precision and speed levers (CPU path: all off)
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16 on a GPU that has it, else fp32) | fp32 | bf16"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations"})
    checkpoint_fraction: float = field(default=1.0, metadata={
        "help": "share of the language model's layers that are recomputed when checkpointing (selective)"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})
    fused_adamw: bool = field(default=False, metadata={"help": "torch's fused AdamW (GPU only)"})
    group_by_length: bool = field(default=False, metadata={
        "help": "sort each global batch by length so micro-batches carry less padding"})
    torch_compile: bool = field(default=False, metadata={"help": "compile each decoder layer (regional)"})
    fused_kernels: bool = field(default=False, metadata={
        "help": "Liger fused RMSNorm/SwiGLU/RoPE kernels when liger_kernel is importable (else a warning)"})
    # --- bookkeeping
    save_every: int = field(default=0, metadata={"help": "checkpoint every N optimizer steps (0 = end only)"})
    keep_checkpoints: int = field(default=0, metadata={"help": "keep the last N checkpoints (0 = all)"})
    resume_from: str = field(default="", metadata={"help": "'' | 'latest' | a checkpoint-N folder"})
    merge: bool = field(default=True, metadata={"help": "after LoRA, also write the merged standalone model"})
    max_val_samples: int = field(default=256, metadata={
        "help": "validation records used for the validation loss (0 = all)"})
    val_every: int = field(default=0, metadata={"help": "validation loss every N steps (0 = end only)"})
    n_samples: int = field(default=4, metadata={
        "help": "validation questions answered before and after training (samples.json), one per "
                "instruction type first"})
    sample_max_new_tokens: int = field(default=24, metadata={"help": "length of those answers"})
    progress: bool = field(default=True, metadata={"help": "show the tqdm bar"})

    def check(self) -> None:
        require(self.method in RECIPE_LR, "method", f"must be 'lora' or 'full', got {self.method!r}")
        require(self.image_mode in ("", *IMAGE_MODES), "image_mode",
                f"must be '' or one of {', '.join(IMAGE_MODES)}, got {self.image_mode!r}")
        require(self.conversation in ("", *CONVERSATIONS), "conversation",
                f"must be '' or one of {', '.join(CONVERSATIONS)}, got {self.conversation!r}")
        require(self.mcq_form in MCQ_FORMS, "mcq_form", f"must be one of {', '.join(MCQ_FORMS)}, "
                f"got {self.mcq_form!r}")
        if self.lr is None:
            self.lr = RECIPE_LR[self.method]
        if self.projector_lr is None:
            self.projector_lr = RECIPE_PROJECTOR_LR[self.method]
        require(self.lr > 0 and self.projector_lr > 0, "lr", "learning rates must be positive")
        require(self.lora_r > 0 and self.lora_alpha > 0, "lora_r", "LoRA rank and alpha must be positive")
        require(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.lr_scheduler in ("cosine", "linear", "constant"), "lr_scheduler",
                f"must be cosine, linear or constant, got {self.lr_scheduler!r}")
        require(self.max_steps >= 0, "max_steps", "must be >= 0")
        require(self.max_steps > 0 or self.num_epochs > 0, "num_epochs", "must be > 0 when max_steps is 0")
        require(self.micro_batch_size > 0, "micro_batch_size", "must be positive")
        require(self.global_batch_size > 0 and self.global_batch_size % self.micro_batch_size == 0,
                "global_batch_size", f"must be a positive multiple of micro_batch_size "
                f"({self.micro_batch_size}), got {self.global_batch_size}")
        require(self.max_length > 8, "max_length", "must be > 8")
        require(0 <= self.max_dropped_fraction <= 1, "max_dropped_fraction", "must be in [0, 1]")
        require(self.precision in ("auto", "fp32", "bf16"), "precision", "must be auto, fp32 or bf16")
        require(0 < self.checkpoint_fraction <= 1, "checkpoint_fraction", "must be in (0, 1]")
        require(self.attn_implementation in ("sdpa", "eager", "flash_attention_2"), "attn_implementation",
                "must be sdpa, eager or flash_attention_2")
        require("test" not in self.val_file.rsplit("/", 1)[-1], "val_file",
                "must not be the test split (never tune on the test split)")
        require(self.save_every >= 0 and self.keep_checkpoints >= 0 and self.val_every >= 0,
                "save_every", "step counts must be >= 0")
        require(all(isinstance(t, str) and t for t in self.types), "types",
                f"must be a list of instruction type names, got {self.types!r}")
        require(self.n_samples >= 0 and self.max_train_samples >= 0 and self.max_val_samples >= 0,
                "n_samples", "sample counts must be >= 0")

    def grad_accum(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each process, so the global batch stays fixed."""
        per_step = self.micro_batch_size * num_processes
        require(self.global_batch_size % per_step == 0, "global_batch_size",
                f"{self.global_batch_size} is not a multiple of micro_batch_size x processes "
                f"({self.micro_batch_size} x {num_processes})")
        return self.global_batch_size // per_step
