// The ops harness runs every registered variant of every op against "cpu.ref" on fresh random inputs.
// Variants on other devices are reached through a DeviceAdapter that moves the host inputs there and
// the outputs back; a backend adds its adapter with `static OpsDeviceRegistration r{...};` in a test
// source of its own (e.g. tests/ops/cuda_adapter.cpp), and its variants are then checked by the same
// cases. Devices without an adapter, or whose adapter says the hardware is absent, are reported as
// skipped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/runtime.h"

namespace kestrel::ops_harness {

struct DeviceAdapter {
  Device device;
  std::string name;
  std::function<bool()> available;                       // hardware present (e.g. a GPU)
  std::function<Tensor(const Tensor& host)> upload;      // host tensor -> device copy (may change dtype)
  std::function<Tensor(const Tensor& device)> download;  // device tensor -> f32 host copy
  std::function<void()> synchronize;                     // wait for queued work (timings)
  std::function<std::shared_ptr<ops::Runtime>()> lane;   // Context::runtime for calls
  double nmse_floor = 0;  // added to every bound: the device's own rounding (e.g. bf16 activations)
};

std::vector<DeviceAdapter>& device_adapters();

struct OpsDeviceRegistration {
  explicit OpsDeviceRegistration(DeviceAdapter a) { device_adapters().push_back(std::move(a)); }
};

}  // namespace kestrel::ops_harness
