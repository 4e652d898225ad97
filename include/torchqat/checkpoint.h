#pragma once
// Checked, all-or-nothing loading of a checkpoint into a module tree: the C++ counterpart of
// Python's torchqat.load_state_dict. torch::load copies tensor by tensor, takes a negative or NaN
// amax as it is, and reads only the tensors a module already has, so a quantizer that was not
// calibrated yet cannot take its amax from a checkpoint. load_checkpoint checks everything first
// and registers the amax of such quantizers.
#include <torch/nn/module.h>

#include <iosfwd>
#include <string>

namespace torchqat {

// Reads a checkpoint and loads it into module (for a holder `model`, pass *model). Accepted:
// what torch::save(module) writes, and a pickled dict of names to tensors (torch::pickle_save,
// or Python's torch.save(dict(model.state_dict()))). Tensors are read onto the CPU and copied to
// where the module's tensors are.
//
// Checked before anything changes: the checkpoint reads (a missing, truncated or corrupted file
// is an error naming it; its zip entries and pickles are bounds-checked before torch parses them,
// so corrupted sizes cannot make it allocate without bound); every "_amax" is a non-empty float tensor, finite and >= 0; every
// tensor has the shape of the module's parameter or buffer; an amax for a quantizer that has
// none yet has 1 value, or for a per-channel weight quantizer one per channel of the weight
// along its axis ([K] or shaped to broadcast); with strict, no key of the module is missing and
// the checkpoint has no other keys. Any problem: c10::Error listing all of them, module unchanged.
void load_checkpoint(torch::nn::Module& module, const std::string& path, bool strict = true);
void load_checkpoint(torch::nn::Module& module, std::istream& stream, bool strict = true);

}  // namespace torchqat
