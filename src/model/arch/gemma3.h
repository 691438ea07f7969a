#pragma once

#include "model/architecture.h"

namespace kestrel::arch {
extern const Architecture kGemma3;
}
