"""PyTorch peer of `cargo xtask bench train`: Off-TANet and its variants, written from
../shared/docs/reference-notes.md, and the five Table 2 baselines, written from
../shared/docs/baselines-notes.md, timed on the same settings as ours.

Run by mer_eval::bench as `python3 -u -c <this file> MODEL BATCH THREADS` (MODEL an
Off-TANet variant or off-apexnet, ststnet, dual-inception, macnn, micro-attention); it prints
`ready ...`, then serves requests on stdin, one per line: `train K` or `infer K` answers
with the seconds of each of K steps on one line; `quit` ends it.
"""
import sys, time, math
import torch
import torch.nn as nn
import torch.nn.functional as F

variant, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)

def head_widths(c, heads):
    return [c // heads + (1 if i < c % heads else 0) for i in range(heads)]

def pos_code(size):
    p = []
    for i in range(size):
        a = 1.0 / 10000.0 ** ((i // 2) / size)
        p.append(math.sin(a) if i % 2 == 0 else math.cos(a))
    m = torch.tensor([[p[a] + p[b] for b in range(size)] for a in range(size)], dtype=torch.float64)
    return m.float()

class Head(nn.Module):
    def __init__(self, cin, d, size):
        super().__init__()
        self.w_q = nn.Conv2d(cin, d, 1)
        self.w_k = nn.Conv2d(cin, d, 1)
        self.w_v = nn.Conv2d(cin, d, 1)
        self.register_buffer("pos_t", pos_code(size).t().contiguous())
    def forward(self, x):
        n, _, h, w = x.shape
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        logits = q @ k.transpose(2, 3) + q @ self.pos_t
        d = q.shape[1]
        attn = F.softmax(logits.reshape(n, d, h * h), dim=-1).reshape(n, d, h, h)
        return attn * v

class MHSA(nn.Module):
    def __init__(self, cin, widths, size):
        super().__init__()
        self.sa_blocks = nn.ModuleList([Head(cin, d, size) for d in widths])
    def forward(self, x):
        return torch.cat([b(x) for b in self.sa_blocks], 1)

class CA(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = max(c // 16, 1)
        self.fc1 = nn.Conv2d(c, h, 1, bias=False)
        self.fc2 = nn.Conv2d(h, c, 1, bias=False)
    def forward(self, x):
        mlp = lambda z: self.fc2(F.relu(self.fc1(z)))
        return torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))

class SpA(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 3, padding=1, bias=False)
    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.conv1(s))

def cbr(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

class Residual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.botneck = nn.Conv2d(cin, cout, 1)
    def forward(self, x):
        return F.max_pool2d(self.conv(x) + self.botneck(x), 2)

class Enhanced(nn.Module):
    def __init__(self, cin, cout, size, cbam, mhsa, conv2):
        super().__init__()
        self.conv1 = cbr(cin, cin)
        self.conv2 = cbr(cin, cout) if conv2 else None
        self.botneck = nn.Conv2d(cin, cout, 1)
        self.ca = CA(cin) if cbam else None
        self.spa = SpA() if cbam else None
        self.sa = MHSA(cin, head_widths(cin if conv2 else cout, 4), size) if mhsa else None
    def forward(self, x):
        h = self.conv1(x)
        if self.ca is not None:
            h = h * self.ca(h)
            h = h * self.spa(h)
        if self.sa is not None:
            h = self.sa(h)
        if self.conv2 is not None:
            h = self.conv2(h)
        return F.max_pool2d(h + self.botneck(x), 2)

class Bot(nn.Module):
    def __init__(self, cin, cout, size):
        super().__init__()
        w = head_widths(cout, 4)
        self.sa1 = MHSA(cin, w, size)
        self.sa2 = MHSA(cout, w, size)
        self.botneck = nn.Conv2d(cin, cout, 1)
    def forward(self, x):
        return F.max_pool2d(self.sa2(self.sa1(x)) + self.botneck(x), 2)

class OffTaNet(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(), nn.BatchNorm2d(8))
        if variant == "all-ta":
            self.res1 = Enhanced(8, 18, 56, True, True, True)
            self.res2 = Enhanced(18, 28, 28, True, True, True)
        else:
            self.res1 = Residual(8, 18)
            self.res2 = Residual(18, 28)
        self.eres = {
            "res": lambda: Residual(28, 8),
            "cbam": lambda: Enhanced(28, 8, 14, True, False, True),
            "sa": lambda: Enhanced(28, 8, 14, False, True, False),
            "bot": lambda: Bot(28, 8, 14),
            "ta": lambda: Enhanced(28, 8, 14, True, True, True),
            "all-ta": lambda: Enhanced(28, 8, 14, True, True, True),
        }[variant]()
        self.dense = nn.Sequential(nn.Linear(392, 64), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 3))
    def forward(self, x):
        x = self.eres(self.res2(self.res1(self.conv1(x))))
        return self.dense(torch.flatten(x, 1))

# --- The Table 2 baselines (baselines-notes.md).

class OffApexStream(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.pool2 = nn.MaxPool2d(2)
    def forward(self, x):
        return torch.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x)))), 1)

class OffApexNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn1, self.cnn2 = OffApexStream(), OffApexStream()
        self.dense = nn.Sequential(nn.Linear(1568, 1024), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 3))
    def forward(self, x):
        return self.dense(torch.cat([self.cnn1(x[:, 0:1]), self.cnn2(x[:, 1:2])], 1))

class StStream(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=3, padding=1)
    def forward(self, x):
        return self.pool(self.conv(x))

class STSTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stream1, self.stream2, self.stream3 = StStream(3), StStream(5), StStream(8)
        self.pool = nn.MaxPool2d(2)
        self.dense = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 3))
    def forward(self, x):
        h = torch.cat([self.stream1(x), self.stream2(x), self.stream3(x)], 1)
        return self.dense(torch.flatten(self.pool(h), 1))

class Inception(nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.path1 = nn.Sequential(nn.Conv2d(c, w, 1), nn.ReLU(), nn.Conv2d(w, w, 5, padding=2), nn.ReLU())
        self.path2 = nn.Sequential(nn.Conv2d(c, w, 1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.path3 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c, w, 1), nn.ReLU())
        self.path4 = nn.Conv2d(c, w, 1)
    def forward(self, x):
        h = torch.cat([self.path1(x), self.path2(x), self.path3(x), self.path4(x)], 1)
        return F.max_pool2d(h, 2)

class DualInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.icpt1 = nn.Sequential(Inception(1, 6), Inception(24, 16))
        self.icpt2 = nn.Sequential(Inception(1, 6), Inception(24, 16))
        self.dense = nn.Sequential(nn.Linear(6272, 1024), nn.ReLU(), nn.Linear(1024, 3))
    def forward(self, x):
        u = torch.flatten(self.icpt1(x[:, 0:1]), 1)
        v = torch.flatten(self.icpt2(x[:, 1:2]), 1)
        return self.dense(torch.cat([u, v], 1))

class ResVgg(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU())
        self.botneck = nn.Conv2d(c, o, 1)
    def forward(self, x):
        return F.max_pool2d(self.conv(x) + self.botneck(x), 2)

class MACNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.res_vgg = nn.Sequential(ResVgg(3, 32), ResVgg(32, 64), ResVgg(64, 128), ResVgg(128, 256))
        self.aconv = nn.Sequential(nn.Conv2d(256, 256, 3, padding=4, dilation=4), nn.ReLU(),
                                   nn.Conv2d(256, 256, 3, padding=2, dilation=2), nn.ReLU())
        self.dense = nn.Sequential(nn.Linear(12544, 4096), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 3))
    def forward(self, x):
        return self.dense(torch.flatten(self.aconv(self.res_vgg(x)), 1))

class MicroAttentionBlock(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.convl_1 = nn.Sequential(nn.Conv2d(c, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.convl_2 = nn.Sequential(nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.convm = nn.Conv2d(c, o, 1)
        self.convr = nn.Conv2d(3 * o, 3 * o, 1)
    def forward(self, x):
        a = self.convl_1(x)
        b = self.convl_2(a)
        m = self.convm(x)
        s = b + m
        e = self.convr(torch.cat([a, b, m], 1)).mean(1)
        n, h, w = e.shape
        wgt = F.softmax(e.reshape(n, h * w), dim=1).reshape(n, 1, h, w)
        return s + s * wgt

class MicroAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.ma = nn.Sequential(MicroAttentionBlock(32, 64), nn.MaxPool2d(2), MicroAttentionBlock(64, 128),
                                nn.MaxPool2d(2), MicroAttentionBlock(128, 256), nn.MaxPool2d(2))
        self.dense = nn.Sequential(nn.Linear(12544, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 3))
    def forward(self, x):
        return self.dense(torch.flatten(self.ma(self.pool(self.conv(x))), 1))

BASELINES = {
    "off-apexnet": (OffApexNet, 2, 28),
    "ststnet": (STSTNet, 3, 28),
    "dual-inception": (DualInception, 2, 28),
    "macnn": (MACNN, 3, 112),
    "micro-attention": (MicroAttention, 3, 224),
}

torch.manual_seed(0)
if variant in BASELINES:
    cls, channels, side = BASELINES[variant]
    model = cls()
else:
    model, channels, side = OffTaNet(variant), 3, 112
if variant == "micro-attention":
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
else:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(batch, channels, side, side)
y = torch.arange(batch) % 3
nparams = sum(p.numel() for p in model.parameters())

def step():
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()

def infer():
    model.eval()
    with torch.no_grad():
        model(x).sum().item()

print(f"ready torch {torch.__version__}, {torch.get_num_threads()} thread(s), {nparams} params", flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts or parts[0] == "quit":
        break
    k = int(parts[1])
    f = step if parts[0] == "train" else infer
    ts = []
    for _ in range(k):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    print(" ".join(f"{t:.6f}" for t in ts), flush=True)
