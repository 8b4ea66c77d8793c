/**
 * The Add Ray cluster form: a Ray cluster started elsewhere, by its GCS address
 * (host:port, as `ray start --head` prints it) and, when the cluster wants one, its
 * token. Where Ray is not installed next to Jupyter, the form says how to install it.
 */

import { Widget } from '@lumino/widgets';

import { el } from './format';

export interface IRayInfo {
  installed: boolean;
  install: string;
  clusters: { cluster_id: string; address: string }[];
}

export interface INewRayCluster {
  address: string;
  token: string;
}

export class RayClusterForm extends Widget {
  constructor(readonly info: IRayInfo) {
    super();
    this.addClass('nbc-new-form');
    this.addClass('nbc-ray-form');
    if (!info.installed) {
      const code = el('code', 'nbc-ray-install', info.install);
      const text = el('p', 'nbc-ray-missing', 'Ray is not installed where Jupyter runs. Install it with ');
      text.append(code, document.createTextNode(', restart Jupyter, then add the cluster.'));
      this.node.append(text);
      return;
    }
    this.node.innerHTML = `
      <label>Address <input name="address" type="text" placeholder="10.0.0.5:6379 (the head's GCS)"></label>
      <label>Token <input name="token" type="password" placeholder="if the cluster wants one" autocomplete="off"></label>
      <p class="nbc-muted">The token is kept in your Jupyter data folder, readable by you only.
      Remove forgets a cluster; it never stops it.</p>`;
  }

  /** The request body; throws with a readable message when the address is wrong. */
  getValue(): INewRayCluster {
    const field = (name: string) =>
      (this.node.querySelector(`input[name="${name}"]`) as HTMLInputElement | null)?.value.trim() ?? '';
    const address = field('address');
    if (!/^[^\s:/]+(:\d+)$|^\[[0-9a-fA-F:]+\]:\d+$/.test(address)) {
      throw new Error(`Ray address: write the head's host:port, e.g. 10.0.0.5:6379 (got "${address}")`);
    }
    return { address, token: field('token') };
  }
}
