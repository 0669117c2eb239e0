"""Lumina-T2Audio and Lumina-T2Music (Lumina-T2X's FlagDiTv2 over Make-An-Audio 2 mel latents with a
BigVGAN vocoder, studio.engines.lumina_audio), sampled as their demos do, with no OpenAI key.

Defaults per task are the demos' (demo_audio.py: 100 steps, CFG 3; demo_music.py: 40 steps, CFG 5),
Euler over linspace(0, 1, steps). The clip length is the model's (a 312-frame latent: 9.984 s at
16 kHz); another length is refused. T2Audio's structured caption, which the reference has
gpt-3.5-turbo write, is the "sound events" option: empty gives the reference's own fallback
`<prompt, all>`. Where Studio differs from the demos on purpose: the unconditional input is the
empty prompt for both models (demo_music.py's guidance is a no-op, its `uc` falls back to the
prompt), and the noise comes from a CPU generator seeded from the job's seed (the demos never seed).
The tokenizers are component cards of this family; the text encoders' weights are in the checkpoint.
"""

from ..registry import Family, Option, register

ENGINE = "studio.engines.lumina_audio"

FAMILY = register(Family(
    name="lumina-audio",
    title="Lumina-T2Audio / T2Music",
    tasks=("audio", "music"),
    options=(
        Option("sound_events", str, "", label="Sound events (structured caption)", tasks=("audio",),
               infotext="Sound events", group="Lumina audio",
               help="what T5 reads beside the prompt, as the reference's GPT step writes it: <sound& when> "
                    "events joined by @, when one of all, start, mid, end, e.g. <dog barking& start>@<rain& all>. "
                    "Empty: the reference's own fallback, <prompt, all>"),
    ),
    task_defaults={"audio": {"steps": 100, "cfg": 3.0}, "music": {"steps": 40, "cfg": 5.0}},
    unused={"negative_prompt": "its guidance is against the empty prompt, as the audio demo's",
            "melody": "it follows text only"},
    run="studio.families.lumina_audio.run:run",
    load=f"{ENGINE}.pipeline:load_lumina_audio",
    check_card=f"{ENGINE}.options:engine_options",
    needed_files=f"{ENGINE}.options:needed_files",
    prepare="studio.families.lumina_audio.run:prepare",
    builders={"tiny-lumina-t2audio": "studio.zoo.builtin_lumina_audio:build_tiny_lumina_audio",
              "tiny-lumina-t2music": "studio.zoo.builtin_lumina_audio:build_tiny_lumina_music",
              "tiny-lumina-bert-tokenizer": "studio.zoo.builtin_lumina_audio:build_tiny_bert_tokenizer",
              "tiny-lumina-t5-tokenizer": "studio.zoo.builtin_lumina_audio:build_tiny_t5_tokenizer"},
))
