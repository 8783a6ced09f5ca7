// Gradient of the gated activation out = act(gate) · up (gated_activation_forward.wgsl): appended to
// pointwise_forward.wgsl, gated_activation_forward.wgsl (ACTIVATION, activation(), normal_cdf()) and
// pointwise_backward.wgsl (silu_derivative()). Branch-free, so that V may be a vector.

const INV_SQRT_2PI: f32 = 0.3989422804014327;

// e^(−x²/2) for |x| ≤ 20, x² split exactly as in normal_cdf (th keeps 12 significant bits, so th² is exact).
fn gaussian(x: V) -> V {
  let t = abs(x);
  let th = bitcast<V>(bitcast<VU>(t) & VU(0xfffff000u));
  return exp_sum(-0.5 * th * th, -0.5 * (t - th) * (t + th));
}

// act'(x), exactly: gelu' = Φ(x) + x·φ(x); relu' = [x > 0] and relu²' = 2·relu(x) (0 at 0, like PyTorch);
// sigmoid' = σ(x)·σ(−x); silu'; selu' = scale·(x > 0 ? 1 : α·eˣ) (PyTorch's choice at 0).
fn activation_derivative(x: V) -> V {
  switch ACTIVATION {
    case 0u: {
      let c = clamp(x, V(-20.0), V(20.0)); // beyond ±20 the derivative is 0 or 1 in f32 (and x·φ(x) could be ∞·0)
      return normal_cdf(c) + c * gaussian(c) * INV_SQRT_2PI;
    }
    case 1u: {
      return select(V(0.0), V(1.0), x > V(0.0));
    }
    case 2u: {
      return 2.0 * max(x, V(0.0));
    }
    case 3u: {
      return sigmoid(x) * sigmoid(-x);
    }
    case 4u: {
      return silu_derivative(x);
    }
    default: {
      return SELU_SCALE * select(SELU_ALPHA * exp_sum(min(x, V(0.0)), V(0.0)), V(1.0), x > V(0.0));
    }
  }
}

// in0 = dy, in1 = gate, in2 = up (column views of x [rows, 2P]); out = d gate, and d up is written `cols` units
// further along the same row (out is the first half of dx [rows, 2P]; the op binds both halves).
@compute @workgroup_size(256)
fn gated_activation_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = at(p.out_off, p.out_stride, e.row, c);
    let dy = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    let gate = in1[at(p.in1_off, p.in1_stride, e.row, c)];
    out[o] = dy * in2[at(p.in2_off, p.in2_stride, e.row, c)] * activation_derivative(gate);
    out[o + p.cols] = dy * activation(gate);
  }
}
