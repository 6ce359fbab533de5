"""The SAM-decoder path: SAM's image embedding rendered from the splats (feature imitation), SAM's
prompt encoder and mask decoder prompted in any view, and decoder masks from many views lifted
into a 3D selection.

Modules (imports flow one way: teacher -> decoder -> field -> distill / aggregate -> command):
    teacher.py    SAM's encoder (registry model, checkpoint or seeded random init), its embedding grid,
                  the on-disk cache of teacher embeddings
    decoder.py    SAM's prompt encoder + mask decoder on a precomputed embedding (`PromptDecoder`)
    field.py      the imitation field (features -> render at the grid -> head), RUN/imitation.npz
    distill.py    training (`splatseg imitate`): photos + interpolated views, FIFO target cache
    fidelity.py   decoder masks from rendered vs encoded embeddings (5x5 grid IoU)
    aggregate.py  prompts -> 3D points -> decoder masks in other views -> lifted selection
    refine.py     the ray-pair RGB refinement of a lifted selection (SANeRF-HQ)
    command.py    `splatseg decode`
"""
