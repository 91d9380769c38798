"""The one door to Ray and Optuna: the only package that imports them (with
outputs/ray_files.py for Ray's saved files, and the trainable Ray runs).

Modules: tuner (Tuner, trainable, callbacks, output), searcher (Optuna's
define-by-run space, samplers, the pruning-aware OptunaSearch), asha (ASHA
whose rungs survive a resume), state_backup (a copy of each state save),
disk_guard (a full disk stops the sweep like Ctrl-C),
cluster (start or join Ray, check every node), progress (the compact view),
tracking (TensorBoard, MLflow), importance (Optuna's fANOVA), probe (checks
everything below at start-up).

Supported: Ray and Optuna in ``probe.RAY_SUPPORTED`` / ``probe.OPTUNA_SUPPORTED``
(pyproject.toml says the same; a test keeps them equal). ``run`` and
``resume`` call ``probe.check()`` first; a missing piece stops them with exit
2 naming the installed versions and the supported range.

What ftsweep relies on beyond Ray's and Optuna's public API (each is checked
by the probe unless marked "not probed"):

Ray Tune private attributes
- ``Tuner._local_tuner`` and its ``get_run_config()`` (tuner.set_callbacks:
  callbacks set on a restored Tuner, whose pickled ones are stale) and
  ``._tune_config`` (tuner.restore_tuner: trials at once and the time budget
  from space.yaml on a resume; tuner.set_callbacks: its ``.scheduler``, whose
  record of ASHA's stops tells the progress view a budget cut from a stop).
- ``ASHAScheduler._brackets``, ``._trial_info``, ``._metric``, ``._time_attr``,
  ``._metric_op``, ``._num_stopped``, ``._max_t`` and ``_Bracket.on_result(trial,
  cur_iter, cur_rew)`` called with a stand-in trial (asha.ResumableASHA
  replays stored results into the rungs; Ray does not restore them).
- ``OptunaSearch._ot_study``, ``._ot_trials``, ``._completed_trials``
  (searcher.PruningOptunaSearch tells Optuna a stopped trial was PRUNED),
  ``._sampler``, ``._storage``, ``._mode``, ``._metric``, ``._points_to_evaluate``
  (queued after the warm start's trials), ``._setup_study(mode)`` and
  ``Searcher.CKPT_FILE_TMPL`` as ``restore_from_dir`` globs it (the searcher
  pickles no Optuna object and saves its study as JSON, engine/history.py).
- Optuna's storage of ``Trial.set_constraint(key, v)`` as the system attribute
  ``constraints:key`` (searcher: a restored trial's constraints, added frozen).
- ``TBXLoggerCallback._try_log_hparams(trial, result)`` (tracking: HParams
  without bookkeeping columns), ``MLflowLoggerCallback._trial_runs`` and
  ``mlflow_util._get_client()`` (tracking: one MLflow run per trial across
  resumes).
- ``ray._private.authentication.authentication_token_setup.
  maybe_enable_token_auth_if_token_available`` (cluster: token auth after a
  refusal); optional, absent before Ray 2.52: not probed.
- ``StorageContext.experiment_fs_path`` / ``experiment_driver_staging_path``
  and a trial's ``.storage`` (asha, state_backup); ``Callback.get_state``
  called at the end of each experiment-state save (state_backup).
- ``tune.run`` handles SIGUSR1 as it does Ctrl-C (ends the loop, saves the
  state, leaves unfinished trials resumable) and ``Trial.error_file`` is
  written before ``on_trial_recover``/``on_trial_error`` are called
  (disk_guard: a full disk stops the sweep; probed through
  ``_setup_signal_catching``'s source).

Ray's saved files (outputs/ray_files.py reads and edits them)
- tune/experiment_state-S.json: ``trial_data`` entries [trial JSON with
  ``trial_id``, ``status``, ``relative_logdir``; metadata JSON with
  ``num_failures``, ``last_result``] (status, leaderboard, resume; a trial
  a full disk failed is set back to PAUSED by outputs/disk.py, written
  through ray_files.write_signed).
- tune/search_gen_state-S.json: the pickled dict of
  ``SearchGenerator.get_state()``: ``counter``, ``total_samples``,
  ``finished``, ``experiment`` (whose ``storage`` has ``storage_filesystem``,
  ``storage_fs_path``, ``experiment_dir_name``) (--add, a moved experiment).
- tune/searcher-state-S.json: ftsweep's own (engine/history.py), written
  through ``Searcher.save``; tune/searcher-state-S.pkl in sweeps from before.
- tune/tuner.pkl, any *.pkl, search_gen_state-S.json, and the cloudpickle
  blobs (``CLOUDPICKLE_FALLBACK``) inside experiment_state-S.json: what Ray
  unpickles. Signed after each save (state_backup, outputs/trust.py) and
  verified before a resume; ``--trust-results`` scans them first
  (outputs/pickle_scan.py). Checked for completeness (pickle opcodes, never
  loaded) before a resume.
- trial_ID/params.json, result.json (one JSON line per report), error.txt
  ("Failure # N" per restart, a traceback's last exception line),
  checkpoint_N/ folders (leaderboard, status, export, ASHA's replay): not
  probed, read tolerantly (a missing or cut-short file is skipped).

Environment switches
- ``RAY_AIR_NEW_OUTPUT=0`` (Ray Tune's older output engine, quiet at
  verbose=0), ``TUNE_GLOBAL_CHECKPOINT_S`` (how often the state is saved),
  ``RAY_AUTH_MODE``, ``RAY_ADDRESS``: not probed (Ray ignores an unknown one).

Optuna: public API (``Study.tell``, ``add_trial``, ``enqueue_trial``,
``TrialState``, the samplers, ``create_trial``, ``distribution_to_json``,
``importance.FanovaImportanceEvaluator``), and one convention: an enqueued
trial keeps its point in ``system_attrs["fixed_params"]`` (history.py
enqueues a saved one again). Nothing of Optuna is pickled into a sweep: its
study is JSON (history.py), its sampler rebuilt from a ``SamplerRecipe``.

Nothing here is imported by ``import search.engine``: each module is imported
where it is used, so reading a results folder never imports Ray.
"""
