/** A small live line chart of the last values (0..max), drawn as inline SVG. */

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 100;
const HEIGHT = 20;

export class Sparkline {
  readonly node: SVGSVGElement;
  private line: SVGPolylineElement;
  private area: SVGPolygonElement;

  constructor(className: string, label: string) {
    this.node = document.createElementNS(SVG, 'svg');
    this.node.setAttribute('class', `nbc-sparkline ${className}`);
    this.node.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
    this.node.setAttribute('preserveAspectRatio', 'none');
    this.node.setAttribute('role', 'img');
    this.node.setAttribute('aria-label', label);
    this.area = document.createElementNS(SVG, 'polygon');
    this.area.setAttribute('class', 'nbc-sparkline-area');
    this.line = document.createElementNS(SVG, 'polyline');
    this.line.setAttribute('class', 'nbc-sparkline-line');
    this.node.append(this.area, this.line);
  }

  /** Draw `values` (oldest first), scaled to `max`, over `capacity` slots. */
  draw(values: number[], max: number, capacity: number): void {
    const step = WIDTH / Math.max(capacity - 1, 1);
    const offset = WIDTH - step * (values.length - 1);
    const points = values.map((v, i) => {
      const y = HEIGHT - (Math.min(Math.max(v, 0), max) / (max || 1)) * (HEIGHT - 1);
      return `${(offset + i * step).toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute('points', points.join(' '));
    this.area.setAttribute(
      'points',
      points.length
        ? `${offset.toFixed(1)},${HEIGHT} ${points.join(' ')} ${WIDTH},${HEIGHT}`
        : ''
    );
    this.node.dataset.values = values.map(v => v.toFixed(1)).join(',');
  }
}

/** The last `capacity` samples of named series (per node: cpu, memory). */
export class History {
  private series = new Map<string, number[]>();

  constructor(readonly capacity: number) {}

  push(key: string, value: number): number[] {
    const values = this.series.get(key) ?? [];
    values.push(value);
    if (values.length > this.capacity) {
      values.splice(0, values.length - this.capacity);
    }
    this.series.set(key, values);
    return values;
  }

  get(key: string): number[] {
    return this.series.get(key) ?? [];
  }

  forget(keep: (key: string) => boolean): void {
    for (const key of [...this.series.keys()]) {
      if (!keep(key)) {
        this.series.delete(key);
      }
    }
  }
}
