"""Runs the torchqat YOLOv7 recipe inside a WongKinYiu/yolov7 checkout (nothing of it is copied here).

    cd yolov7 && python /path/to/torchqat/examples/yolov7/yolov7_main.py ptq --weights yolov7.pt --coco data/coco.yaml
    ... sensitivity | qat | export   (see README.md)

It imports the checkout's own model, data loader and COCO evaluation (models/, utils/, test.py),
so it must run from the checkout's root.
"""
import argparse
import json
import os
import sys

import torch
import yaml

sys.path.insert(0, os.getcwd())  # the yolov7 checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qat_recipe  # noqa: E402


def _load_float(weights, device):
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)  # a pickled yolov7 Model
    model = ckpt["model"].float().eval()
    model.fuse()  # the deploy graph: Conv+BN folded, RepConv re-parameterised, implicit layers merged
    return model.to(device)


def _loaders(data_yaml, imgsz, batch):
    from utils.datasets import create_dataloader  # yolov7's

    with open(data_yaml) as f:
        data = yaml.safe_load(f)
    with open("data/hyp.scratch.p5.yaml") as f:
        hyp = yaml.safe_load(f)
    opt = argparse.Namespace(single_cls=False)
    train = create_dataloader(data["train"], imgsz, batch, 32, opt, hyp=hyp, augment=True, workers=8)[0]
    val = create_dataloader(data["val"], imgsz, batch, 32, opt, hyp=hyp, rect=True, pad=0.5, workers=8)[0]
    return data, train, val


def _images(batch, device):
    return batch[0].to(device, non_blocking=True).float() / 255.0


def _map(model, data_yaml, val_loader, imgsz, batch):
    import test  # yolov7's COCO evaluation

    results = test.test(data_yaml, batch_size=batch, imgsz=imgsz, conf_thres=0.001, iou_thres=0.65, model=model,
                        dataloader=val_loader, half_precision=True, save_json=False, plots=False)[0]
    return results[3]  # mAP@.5:.95


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("ptq", "sensitivity", "qat", "export"))
    p.add_argument("--weights", default="yolov7.pt")
    p.add_argument("--coco", default="data/coco.yaml")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--ignore", nargs="*", default=["model.105.m.*"], help="module patterns kept float")
    p.add_argument("--calib-batches", type=int, default=25)
    p.add_argument("--method", default="mse", choices=("mse", "entropy", "percentile", "max"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iters", type=int, default=200, help="QAT batches per epoch")
    p.add_argument("--out", default="torchqat_yolov7")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model = _load_float(args.weights, device)
    example = torch.zeros(1, 3, args.imgsz, args.imgsz, device=device)
    data, train, val = _loaders(args.coco, args.imgsz, args.batch)
    print(qat_recipe.prepare(model, example, exclude=args.ignore, fold_bn=False))
    qat_recipe.calibrate(model, train, num_batches=args.calib_batches, method=args.method,
                         preprocess=lambda b: _images(b, device))
    torch.save({"model": model}, os.path.join(args.out, "ptq.pt"))
    summary = {"ptq_map": _map(model, args.coco, val, args.imgsz, args.batch)}

    if args.step == "sensitivity":
        table, top = qat_recipe.sensitivity(model, lambda m: _map(m, args.coco, val, args.imgsz, args.batch),
                                            plot=os.path.join(args.out, "sensitivity.png"))
        print(table)
        summary["most_sensitive"] = top
    if args.step in ("qat", "export"):
        best = {"map": -1.0}

        def on_epoch_end(epoch, m):
            score = _map(m, args.coco, val, args.imgsz, args.batch)
            print(f"epoch {epoch}: mAP@.5:.95 {score:.4f}")
            if score > best["map"]:
                best["map"] = score
                torch.save({"model": m}, os.path.join(args.out, "qat.pt"))

        if args.step == "qat":
            qat_recipe.finetune(model, train, epochs=args.epochs, iters_per_epoch=args.iters,
                                layers=[f"model.{i}" for i in range(len(model.model) - 1)],
                                preprocess=lambda b: _images(b, device), on_epoch_end=on_epoch_end)
            summary["qat_map"] = best["map"]
            model = torch.load(os.path.join(args.out, "qat.pt"), map_location=device, weights_only=False)["model"]
        onnx_path = qat_recipe.export(model, os.path.join(args.out, "yolov7_qdq.onnx"), example)
        summary["onnx"] = onnx_path
        summary["trtexec"] = qat_recipe.trtexec_command(onnx_path, imgsz=args.imgsz)
        print(summary["trtexec"])
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
