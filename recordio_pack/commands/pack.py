"""``recordio-pack pack INPUT OUTDIR``: images (a folder, an im2rec .lst, or an ImageNet tar) to RecordIO or TFRecord
shards."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_aws_options, add_output_options, emit, parse_size, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pack", help="pack images into RecordIO .rec/.idx shards (or TFRecord shards: --format tfrecord)",
        description="Pack INPUT into OUTDIR/NAME.rec/.idx (one shard) or NAME-00003-of-00016.rec/.idx, with "
                    "NAME.manifest.json (checksums), NAME.rejects.tsv (every skipped input and why) and the class "
                    "map. INPUT is a class-folder tree (listed like `list`), an im2rec .lst (with --root), or an "
                    "uncompressed ILSVRC2012 train/val tar. A killed run resumes when rerun; outputs of other "
                    "options are never replaced without --overwrite. --format tfrecord writes tf.Example TFRecord "
                    "shards in the layout of --preset tpu (imagenet_to_gcs.py), aip (AI Platform) or tfds (a TFDS "
                    "data_dir for imagenet2012), each with DALI's index in OUTDIR/dali_idx/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input", help="folder, .lst file or .tar archive, or s3://bucket/prefix (class folders in S3)")
    parser.add_argument("outdir", help="output folder, or s3://bucket/prefix (shards uploaded as they finish, "
                                       "through a local staging folder: --staging)")
    parser.add_argument("--name", help="dataset name for output files (default: INPUT's own name, resolved)")
    parser.add_argument("--root", help="folder (or s3://bucket/prefix) the .lst paths are relative to (required "
                                       "with a .lst)")
    parser.add_argument("--classes", help="class map file (label<TAB>name lines) for a .lst; default: synsets.txt beside it")
    image = parser.add_argument_group("images")
    image.add_argument("--resize", type=int, default=0, help="shorter side in pixels; 0 keeps the size")
    image.add_argument("--upscale", action="store_true", help="also enlarge images smaller than --resize (im2rec always does)")
    image.add_argument("--center-crop", action="store_true", help="crop the central square before resizing")
    image.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding")
    image.add_argument("--encoding", choices=["jpg", "png"], default="jpg", help="format of re-encoded images")
    image.add_argument("--color", type=int, choices=[1, 0, -1], default=1, help="1 colour, 0 grayscale, -1 as stored")
    image.add_argument("--reencode", choices=["auto", "always", "never"], default="auto",
                       help="auto: keep valid 8-bit RGB/gray JPEGs that need no resize, convert the rest; "
                            "always: re-encode every image (im2rec); never: store bytes as they are (--pass-through)")
    image.add_argument("--max-pixels", type=positive_int, default=100_000_000, help="decompression-bomb guard")
    image.add_argument("--validate", choices=["full", "header"], default="full",
                       help="full: also decode the images stored as they are, rejecting damaged ones; "
                            "header: check only their structure (faster pass-through on trusted data)")
    records = parser.add_argument_group("records and shards")
    records.add_argument("--format", choices=["recordio", "tfrecord"], default="recordio",
                         help="record format of the shards")
    records.add_argument("--preset", choices=["tpu", "aip", "tfds"],
                         help="TFRecord layout (default tpu): tpu = imagenet_to_gcs.py's file names and keys, "
                              "1-based labels, 1024 train / 128 validation shards unless --num-shards/--shard-size; "
                              "aip = image/encoded + image/class/label 1..N + NAME.label_map.txt; tfds = "
                              "OUTDIR as a TFDS data_dir of imagenet2012 (needs its 1000 classes). tpu and tfds take "
                              "--name train or validation")
    records.add_argument("--label-base", type=int, choices=[0, 1],
                         help="TFRecord: the stored label of class 0 (default: 1 for tpu and aip, 0 for tfds)")
    records.add_argument("--pack-label", action="store_true", help="store multi-label .lst lines as label vectors")
    records.add_argument("--key", choices=["position", "lst-index"], default="position",
                         help=".idx keys: 0..n-1 per shard, or the .lst index (im2rec)")
    shards = records.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=positive_int, help="number of shards")
    shards.add_argument("--shard-size", type=parse_size, help="input bytes per shard, e.g. 512MiB (default 256MiB)")
    listing = parser.add_argument_group("listing (folder input)")
    listing.add_argument("--exts", default=".jpeg,.jpg,.png", help="extensions to list")
    listing.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="pack in sorted order")
    listing.add_argument("--seed", type=int, default=100, help="shuffle seed")
    archive = parser.add_argument_group("archive input")
    archive.add_argument("--labels", choices=["sorted", "devkit", "tf"], default="sorted", help="ImageNet label convention")
    archive.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz (labels for the val tar)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--workers", type=positive_int, help="worker processes (default: all usable CPUs)")
    run_group.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                           help="skip: reject a bad image (listed in NAME.rejects.tsv) and go on; fail: stop")
    run_group.add_argument("--overwrite", action="store_true", help="replace outputs of a different pack")
    run_group.add_argument("--detect-changes", choices=["stat", "content"], default="stat",
                           help="how a rerun finds changed inputs (their shards are packed again): size and "
                                "modification time, or a SHA-256 of every input (reads them all)")
    run_group.add_argument("--trust-finished", action="store_true",
                           help="reuse finished shards after checking their sizes only, not their SHA-256")
    run_group.add_argument("--skip-space-check", action="store_true",
                           help="start even when the output folder seems to lack the space the shards need")
    run_group.add_argument("--staging", metavar="DIR",
                           help="with an s3:// OUTDIR: the local folder shards are written in before they are "
                                "uploaded, and where the journal lives (default: "
                                "~/.cache/recordio-pack/staging/BUCKET/PREFIX); it holds about two shards per "
                                "worker plus the index files")
    run_group.add_argument("--engine", choices=["local", "ray"], default="local",
                           help="local: --workers processes here; ray: one Ray task per shard on the cluster at "
                                "--address (OUTDIR must then be a folder every node sees)")
    run_group.add_argument("--address", default="auto",
                           help="with --engine ray: auto (the running cluster), local (start one here), or HOST:PORT")
    run_group.add_argument("--num-nodes", type=positive_int,
                           help="machines packing this dataset together into one OUTDIR they all see (default: "
                                "$AWS_BATCH_JOB_ARRAY_SIZE, else 1); each packs its share, then `commit OUTDIR`")
    run_group.add_argument("--node-rank", type=int,
                           help="this machine's number, 0..N-1 (default: $AWS_BATCH_JOB_ARRAY_INDEX)")
    add_aws_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.commands._common import ProgressBar
    from recordio_pack.errors import UsageError
    from recordio_pack.formats.tfrecord import default_num_shards, split_name
    from recordio_pack.inputs import check_dataset_name, open_input
    from recordio_pack.options import PackOptions
    from recordio_pack.pack import pack_input

    if args.format != "tfrecord" and (args.preset or args.label_base is not None):
        raise UsageError("--preset and --label-base are for --format tfrecord")
    preset = args.preset or ("tpu" if args.format == "tfrecord" else "")
    settings = dict(
        resize=args.resize, upscale=args.upscale, center_crop=args.center_crop, quality=args.quality,
        encoding=args.encoding, color=args.color, reencode=args.reencode, max_pixels=args.max_pixels,
        validate=args.validate, pack_label=args.pack_label, key=args.key, num_shards=args.num_shards,
        shard_size=args.shard_size, on_error=args.on_error, workers=args.workers or 0, format=args.format,
        preset=preset, label_base=args.label_base)
    try:
        options = PackOptions(**settings)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.name is not None:
        check_dataset_name(args.name)
    from recordio_pack.aws.session import AwsTarget
    from recordio_pack.executors import Executor, LocalPool, RayExecutor

    pack_in = open_input(args.input, root=args.root, classes_file=args.classes,
                         exts=[ext for ext in args.exts.split(",") if ext], shuffle=args.shuffle, seed=args.seed,
                         labels=args.labels, devkit=args.devkit, aws=AwsTarget.from_args(args))
    name = args.name or (split_name(pack_in.name) if preset in ("tpu", "tfds") else pack_in.name)
    if args.num_shards is None and args.shard_size is None and default_num_shards(preset, name):
        options = PackOptions(**dict(settings, num_shards=default_num_shards(preset, name)))  # imagenet_to_gcs's
    executor: Executor = (RayExecutor(address=args.address, num_cpus=args.workers) if args.engine == "ray"
                          else LocalPool(options.worker_count))
    node = _node_share(args)
    out_dir, output = args.outdir, None
    if args.outdir.startswith("s3://"):
        from recordio_pack.aws.s3_output import default_staging, parse_output

        output = parse_output(args.outdir, AwsTarget.from_args(args))
        out_dir = args.staging or str(default_staging(output))
    elif args.staging:
        raise UsageError("--staging is for an s3:// OUTDIR")
    with ProgressBar(args) as bar:  # "pack NAME", images, resumed ones counted but not in the rates
        result = pack_input(pack_in, out_dir, options, name=name, overwrite=args.overwrite, progress=bar,
                            detect_changes=args.detect_changes, verify_finished=not args.trust_finished,
                            space_check=not args.skip_space_check, executor=executor, node=node, output=output)
    emit(args, result.as_dict(), _node_summary(result, node) if node is not None else summary(result))
    return 0


def _node_share(args: argparse.Namespace):  # -> recordio_pack.pack.NodeShare | None
    """--num-nodes/--node-rank, or AWS Batch's array variables (an array job's children each run one node)."""
    import os

    from recordio_pack.errors import UsageError
    from recordio_pack.pack import NodeShare

    def from_environment(variable: str) -> int | None:
        text = os.environ.get(variable)
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"${variable} is {text!r}, not a number") from None

    # Batch sets the index in every array child; the size only when a job definition asks for node shares
    count = args.num_nodes if args.num_nodes is not None else from_environment("AWS_BATCH_JOB_ARRAY_SIZE")
    if count is None:
        if args.node_rank is not None:
            raise UsageError("--node-rank needs --num-nodes (or $AWS_BATCH_JOB_ARRAY_SIZE)")
        return None
    rank = args.node_rank if args.node_rank is not None else from_environment("AWS_BATCH_JOB_ARRAY_INDEX")
    if count == 1:
        if rank not in (None, 0):
            raise UsageError(f"--node-rank {rank} with one node: give --num-nodes N")
        return None
    if rank is None:
        raise UsageError(f"--num-nodes {count} needs --node-rank 0..{count - 1} (or $AWS_BATCH_JOB_ARRAY_INDEX)")
    return NodeShare(rank, count)


def _node_summary(result, node) -> str:  # result: PackResult; node: NodeShare
    return (f"node {node.rank} of {node.count}: packed {result.records} records in {result.shards} shard(s) of "
            f"{result.name} into {result.out_dir} ({result.shards_resumed} kept as they were); partial manifest "
            f"{result.manifest}\nwhen every node has finished: recordio-pack commit {result.out_dir}")


def summary(result) -> str:  # result: recordio_pack.pack.PackResult
    if result.up_to_date:
        lines = [f"{result.name} in {result.out_dir} is up to date: {result.records} records in {result.shards} "
                 "shard(s), inputs unchanged, every shard checked"]
    else:
        reused = []
        if result.shards_resumed:
            reused.append(f"{result.shards_resumed} shard(s) kept as they were")
        if result.shards_repacked_changed:
            reused.append(f"{result.shards_repacked_changed} repacked because their inputs changed")
        if result.shards_repacked_damaged:
            reused.append(f"{result.shards_repacked_damaged} repacked because their files failed the checksum")
        lines = [f"packed {result.records} of {result.images} images into {result.shards} shard(s) in {result.out_dir} "
                 f"({result.bytes_out / 2**20:.1f} MiB; {result.reencoded} re-encoded"
                 + "".join(f"; {part}" for part in reused) + ")"]
    lines.append(f"manifest: {result.manifest}")
    if result.published_to:
        lines.append(f"uploaded to {result.published_to} (manifest last); staging folder: {result.out_dir}")
    lines.append(f"inputs: {result.files_accounted} = {result.records} packed + {result.rejects} rejected + "
                 f"{result.skipped} skipped")
    if result.rejects:
        lines.append(f"rejected {result.rejects} input(s), listed with reasons in {result.rejects_file}:")
        lines += [f"  {path!r}: {reason}" if "\n" in path or "\t" in path else f"  {path}: {reason}"
                  for path, reason in result.reject_samples]
        if result.rejects > len(result.reject_samples):
            lines.append(f"  ... and {result.rejects - len(result.reject_samples)} more")
    if result.skipped:
        by_extension = ", ".join(f"{count} {extension}" for extension, count in result.skipped_by_extension.items())
        lines.append(f"skipped {result.skipped} file(s) that are not images by extension ({by_extension}), "
                     f"listed in {result.skipped_file}")
    if result.cross_class_links:
        lines.append(f"warning: {result.cross_class_links} symbolic link(s) point to an image in another class "
                     "folder; each was packed under the class of the folder holding the link")
    return "\n".join(lines)
