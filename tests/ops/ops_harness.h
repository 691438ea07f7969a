// The ops harness runs every registered variant of every op against "cpu.ref" on fresh random inputs.
// Variants on other devices are reached through a DeviceAdapter that moves the host inputs there, in the
// dtypes that device's kernels take, and the outputs back; without an explicit one the harness builds an
// adapter on the device's default lane (CUDA: see lane_adapter in ops_harness_test.cpp). A backend may add
// its own with `static OpsDeviceRegistration r{...};` in a test source of its own. Devices whose adapter
// says the hardware is absent are reported as skipped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/runtime.h"

namespace kestrel::ops_harness {

// What an input is to the op, which decides the dtype a device receives it in.
enum class Role {
  Activation,  // activations and op outputs: f32 on the CPU, bf16 on CUDA (as a model runs there)
  Weight,      // matmul weights: the file's type on the CPU; on CUDA bf16 or kept in their GGUF block type
  Table,       // embedding tables: the file's type on the CPU; CUDA converts them to bf16 at load
  Param,       // norm weights, biases: f32 everywhere
  Index,       // token ids, positions, slots, block tables: i32 as they are
  Cache,       // KV pages: the case's dtype on the CPU; on CUDA bf16, or the code types as they are
  KvParams,    // the f16 scales of code pages: as they are everywhere
};

struct DeviceAdapter {
  Device device;
  std::string name;
  std::function<bool()> available;                       // hardware present (e.g. a GPU)
  std::function<DType(Role, DType host)> dtype_for;      // the dtype inputs of a role travel in
  std::function<Tensor(const Tensor& host)> upload;      // host tensor -> device copy, same dtype
  std::function<Tensor(const Tensor& device)> download;  // device tensor -> f32 host copy
  std::function<void()> synchronize;                     // wait for queued work (timings)
  std::function<std::shared_ptr<ops::Runtime>()> lane;   // Context::runtime for calls
  double nmse_floor = 0;  // added to every bound: the device's own rounding (e.g. bf16 activations)
  // Host views only (the reference's inputs as a device sees them): the precision a role's values are
  // rounded to before they travel in dtype_for's type; null: none.
  std::function<DType(Role, DType host)> rounds_to = nullptr;
};

std::vector<DeviceAdapter>& device_adapters();

struct OpsDeviceRegistration {
  explicit OpsDeviceRegistration(DeviceAdapter a) { device_adapters().push_back(std::move(a)); }
};

}  // namespace kestrel::ops_harness
