import json

import pytest

from rayspine.config import PAPER_AE_RECIPE, Config, ae_overrides


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.grid.spacing_mm == (1.4, 1.2, 1.5)
    assert cfg.discs.crop_size == 64
    assert cfg.ae.bottlenecks == (64, 8, 4, 3) and cfg.ae.target_iou == 0.995 and cfg.ae.batch_size == 4
    assert (cfg.cv.max_depth, cfg.cv.n_estimators, cfg.cv.learning_rate, cfg.cv.folds) == (3, 200, 0.1, 5)
    assert (cfg.seg.learning_rate, cfg.seg.batch_size, cfg.seg.patience) == (1e-3, 4, 15)
    assert cfg.interpret.points == 6


def test_paper_recipe_is_the_papers_training_and_flags_still_win():
    default = Config().ae
    assert default.augment and default.lr_cosine and default.max_epochs == 60  # the recipe measured best on unseen people
    paper = Config.from_dict({"ae": ae_overrides(True)}).ae
    assert (paper.max_epochs, paper.lr_cosine, paper.augment, paper.augment_rotate_deg, paper.augment_scale, paper.calibrate_threshold) == (1000, False, False, 0.0, 0.0, False)
    assert (paper.learning_rate, paper.batch_size, paper.target_iou) == (1e-3, 4, 0.995)
    assert ae_overrides(True, max_epochs=350, model=None) == {**PAPER_AE_RECIPE, "max_epochs": 350}
    assert ae_overrides(False, max_epochs=None, bottlenecks=(4,)) == {"bottlenecks": (4,)}


def test_round_trip_through_json_keeps_tuples_and_digest():
    cfg = Config().replace(ae={"max_epochs": 7, "bottlenecks": [8, 4]})
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.ae.bottlenecks == (8, 4)
    assert again.digest() == cfg.digest() != Config().digest()


def test_unknown_keys_are_errors_not_ignored():
    with pytest.raises(ValueError, match="sections"):
        Config.from_dict({"nope": {}})
    with pytest.raises(ValueError, match="AEConfig"):
        Config.from_dict({"ae": {"max_epoch": 3}})


def test_free_cpus_waits_for_finished_tasks_and_sees_held_ones(ray_local):
    import ray

    from rayspine.runtime import free_cpus_on_one_node

    total = int(ray.cluster_resources()["CPU"])
    # Right after tasks finish, Ray may not yet show their CPUs as free: training read 1 of 2 here.
    ray.get([ray.remote(num_cpus=1)(lambda: 0).remote() for _ in range(total)])
    assert free_cpus_on_one_node() == total

    holder = ray.remote(num_cpus=1)(type("Holder", (), {"ready": lambda self: True})).remote()
    ray.get(holder.ready.remote())
    assert free_cpus_on_one_node(wait_s=0.5) == total - 1  # an actor's CPU is not free
    ray.kill(holder)
