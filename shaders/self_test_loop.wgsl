// Platform self-test: counts `p.trips` loop iterations in one invocation. llvmpipe (lavapipe) silently ends any
// loop after 65,535 iterations per invocation, so a count of 70,000 tells a faithful device from a truncating one.

struct Params {
  trips: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> count: array<u32>;

@compute @workgroup_size(1)
fn main() {
  var c = 0u;
  for (var i = 0u; i < p.trips; i++) {
    c += 1u;
  }
  count[0] = c;
}
